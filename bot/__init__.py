"""csbot: a self-hosted Slack bot for customer-service and sentiment teams."""

__version__ = "0.1.0"
