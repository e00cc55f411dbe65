"""The event store read as an outbox: append in the writer's transaction, read by position."""
