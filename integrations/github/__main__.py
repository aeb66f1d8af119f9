"""``python -m scopeguard.integrations.github``: the GitHub Action's entry point (action.yml)."""

import sys

from .action import main

sys.exit(main())
