"""Thin adapters to trackers (GitHub, Jira); installed as ``scopeguard.integrations``."""
