"""GitHub: the Action's flow, its REST client, and the handler of GitHub webhooks for the service."""
