"""Turning deliveries into signed HTTP requests: claims, sending, retries, bookkeeping."""
