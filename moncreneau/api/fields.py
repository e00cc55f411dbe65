"""Request fields that refuse what storage cannot hold (NUL, lone surrogates, huge ids, dates)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import marshmallow as ma
from werkzeug.routing import IntegerConverter

MAX_ID = 2**31 - 1
# What `storable` refuses, as the spec says it: JSON Schema cannot name lone surrogates,
# and valid JSON text cannot carry them.
NO_NUL = "^[^\\u0000]*$"
# Dates are stored as UTC instants; these bounds keep every offset conversion in range.
MIN_YEAR, MAX_YEAR = 1900, 2999


def storable(value: str) -> str:
    """`value` if every backend can store it: no NUL, no lone UTF-16 surrogate."""
    if "\x00" in value:
        raise ma.ValidationError("Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ma.ValidationError("Must be valid Unicode (no lone surrogates).") from None
    return value


class Pattern(ma.validate.Regexp):
    """A regular expression the whole value must match, as JSON Schema's `pattern` means it.

    `^...$` in the spec; `re.fullmatch` here, since Python's `$` also matches before a
    trailing newline.
    """

    def __init__(self, pattern: str, error: str) -> None:
        super().__init__(pattern, error=error)
        self.whole = re.compile(pattern.removeprefix("^").removesuffix("$"))

    def __call__(self, value: Any) -> Any:
        if self.whole.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


def _document_storable(field: ma.fields.Field) -> None:
    if not any(isinstance(v, ma.validate.Regexp) for v in field.validators):
        field.metadata = {"pattern": NO_NUL, **field.metadata}


class Text(ma.fields.String):
    """A string every backend can store."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _document_storable(self)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return storable(super()._deserialize(value, attr, data, **kwargs))


_ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The addresses marshmallow's check accepts that JSON Schema can state: a dot-atom local
# part and an ASCII domain whose last label has two characters or more.
EMAIL_PATTERN = rf"^{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]$"


class Email(ma.fields.Email):
    """An e-mail address every backend can store, in the shape the spec documents."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pattern = Pattern(EMAIL_PATTERN, error="Not a valid email address.")
        email = self.validators.pop(0)

        def email_once(value: str) -> None:
            # Both must hold, but a value the pattern refused gets its message only once.
            if pattern.whole.fullmatch(value) is not None:
                email(value)

        self.validators[:0] = [pattern, email_once]

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return storable(super()._deserialize(value, attr, data, **kwargs))


class StrictInteger(ma.fields.Integer):
    """An integer that refuses booleans and numeric strings."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


class StrictBoolean(ma.fields.Boolean):
    """`true` or `false`, as JSON says them: no 0, 1, "yes" or "on"."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def Id(**kwargs: Any) -> StrictInteger:
    return StrictInteger(validate=ma.validate.Range(min=1, max=MAX_ID), **kwargs)


class DateTime(ma.fields.DateTime):
    """ISO 8601; the year must lie in [1900, 2999] so that its UTC instant exists."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metadata = {"pattern": "^(?:19|2[0-9])[0-9]{2}-", **self.metadata}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        result: datetime = super()._deserialize(value, attr, data, **kwargs)
        if not MIN_YEAR <= result.year <= MAX_YEAR:
            raise ma.ValidationError(f"The year must be between {MIN_YEAR} and {MAX_YEAR}.")
        if result.tzinfo is not None:
            result.astimezone(UTC)
        return result


class AwareDateTime(DateTime):
    """A DateTime that must carry an offset."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        result = super()._deserialize(value, attr, data, **kwargs)
        if result.tzinfo is None:
            raise ma.ValidationError("Must include an offset, e.g. Z or +01:00.")
        return result


class IdConverter(IntegerConverter):
    """`<id:name>` in routes: a positive 32-bit integer; anything else matches no route (404)."""

    def __init__(self, map: Any) -> None:
        super().__init__(map, min=1, max=MAX_ID)


PUBLIC_ID = re.compile(r"^[a-z]{3}_[0-9a-z]{26}$")


def is_public_id(value: str, prefix: str) -> bool:
    """Whether `value` could be one of our ids (`evt_...`, `msg_...`) before asking storage."""
    return value.startswith(f"{prefix}_") and PUBLIC_ID.match(value) is not None
