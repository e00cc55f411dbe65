"""The HTTP layer the resource blueprints share: request context, errors, fields, keys."""
