"""The event log as an API: what a consumer that was offline reads to catch up."""
