"""Webhook subscriptions, payload versions and signatures."""
