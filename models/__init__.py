"""Shipped calibrations and their model cards; installed as ``scopeguard.models``."""
