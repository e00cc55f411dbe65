"""Examples of receiving MonCréneau webhooks."""
