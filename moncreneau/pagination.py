"""Opaque keyset cursors: a list resumes strictly after the last row it returned."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from moncreneau.domain.errors import Invalid

T = TypeVar("T")


def encode_cursor(kind: str, after: int) -> str:
    raw = json.dumps({"k": kind, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, maximum: int = 2**31 - 1) -> int:
    """The position a cursor names; `maximum` is the largest key the list's column holds."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data: Any = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        after = data["a"]
        if data["k"] != kind or not isinstance(after, int) or isinstance(after, bool):
            raise ValueError
        if not 0 <= after <= maximum:
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
        raise Invalid.field("cursor", "Not a valid cursor for this list.") from None
    return after


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None

    @classmethod
    def of(cls, rows: list[Any], limit: int, kind: str, key: str, items: list[T]) -> Page[T]:
        """`rows` were fetched with limit + 1 so that a next page is known without a count."""
        if len(rows) > limit:
            return cls(items[:limit], encode_cursor(kind, getattr(rows[limit - 1], key)))
        return cls(items, None)


def keyset_page(
    session: Session,
    query: Select[Any],
    column: InstrumentedAttribute[int],
    kind: str,
    limit: int,
    cursor: str | None,
    render: Callable[[list[Any]], list[T]],
    *,
    newest_first: bool = False,
    maximum: int = 2**31 - 1,
) -> Page[T]:
    """One page of `query` ordered by the unique, growing `column`, after `cursor`."""
    if cursor:
        after = decode_cursor(kind, cursor, maximum)
        query = query.where(column < after if newest_first else column > after)
    order = column.desc() if newest_first else column
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    return Page.of(rows, limit, kind, column.key, render(rows[:limit]))
