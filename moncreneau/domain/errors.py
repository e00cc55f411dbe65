"""Domain errors; the API maps each kind to one HTTP status in a single place."""

from __future__ import annotations

from collections.abc import Mapping


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """The resource does not exist for this organization."""


class Invalid(DomainError):
    """The request is well formed but its values break a rule (field -> messages)."""

    def __init__(self, message: str, errors: Mapping[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})

    @classmethod
    def field(cls, name: str, message: str) -> Invalid:
        return cls(message, {name: [message]})


class Conflict(DomainError):
    """The request conflicts with the current state (full slot, illegal transition, race)."""


class PreconditionFailed(DomainError):
    """An If-Match precondition named a version that is no longer current."""


class Gone(DomainError):
    """The resource existed but what the request needs of it was deleted for good."""
