"""MonCréneau: appointment booking with signed, reliable webhooks."""
