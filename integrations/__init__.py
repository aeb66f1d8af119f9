"""scopeguard's deployables: the GitHub Action (``github``), the Jira client (``jira``) and the
webhook service for both (``service``). The core (``scopeguard``) never imports these."""
