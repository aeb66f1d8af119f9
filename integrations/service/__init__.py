"""The webhook service (``scopeguard serve``) for Jira and GitHub: the ASGI app, the durable
queue and issue store, authentication, metrics, and the workers that classify and write back."""
