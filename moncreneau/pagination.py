"""Opaque keyset cursors: a list resumes strictly after the last row it returned."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, false
from sqlalchemy.orm import InstrumentedAttribute, Session

from moncreneau.domain.errors import Invalid

T = TypeVar("T")

# A list's `limit`, as the public contract fixes it.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


def cursor_pattern(kind: str) -> str:
    """Every cursor of the `kind` list, as the spec documents it: the list, then a hex position."""
    return rf"^{kind}\.[0-9a-f]{{1,16}}$"


def encode_cursor(kind: str, after: int) -> str:
    return f"{kind}.{after:x}"


def decode_cursor(kind: str, cursor: str) -> int:
    """The position a cursor names; any value of `cursor_pattern(kind)` names one."""
    match = re.fullmatch(rf"{kind}\.([0-9a-f]{{1,16}})", cursor)
    if match is None:
        raise Invalid.field("cursor", "Not a valid cursor for this list.")
    return int(match[1], 16)


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
        after = decode_cursor(kind, cursor)
        if after <= maximum:
            query = query.where(column < after if newest_first else column > after)
        elif not newest_first:
            # Past the largest key the column holds (binding it would overflow): nothing follows.
            query = query.where(false())
    order = column.desc() if newest_first else column
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    return Page.of(rows, limit, kind, column.key, render(rows[:limit]))
