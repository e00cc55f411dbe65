"""Opaque keyset cursors: a list resumes strictly after the last row it returned."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, bindparam, false, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from moncreneau.domain.errors import Invalid

T = TypeVar("T")

# A list's `limit`, as the public contract fixes it.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


_HEX = "[0-9a-f]{1,16}"


def cursor_pattern(kind: str, parts: int = 1) -> str:
    """Every cursor of the `kind` list, as the spec documents it: the list, then hex numbers.

    A list keyed by `parts` columns also takes the shorter cursors it gave out before.
    """
    more = rf"(\.{_HEX}){{0,{parts - 1}}}" if parts > 1 else ""
    return rf"^{kind}\.{_HEX}{more}$"


def encode_cursor(kind: str, *after: int) -> str:
    return ".".join([kind, *(f"{key:x}" for key in after)])


def decode_cursor(kind: str, cursor: str, parts: int = 1) -> tuple[int, ...]:
    """The key a cursor names; any value of `cursor_pattern(kind, parts)` names one."""
    if re.fullmatch(cursor_pattern(kind, parts), cursor) is None:
        raise Invalid.field("cursor", "Not a valid cursor for this list.")
    return tuple(int(key, 16) for key in cursor.split(".")[1:])


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None

    @classmethod
    def of(
        cls, rows: list[Any], limit: int, kind: str, keys: tuple[str, ...], items: list[T]
    ) -> Page[T]:
        """`rows` were fetched with limit + 1 so that a next page is known without a count."""
        if len(rows) > limit:
            last = rows[limit - 1]
            return cls(items[:limit], encode_cursor(kind, *(getattr(last, k) for k in keys)))
        return cls(items, None)


Key = InstrumentedAttribute[int]


def keyset_page(
    session: Session,
    query: Select[Any],
    key: Key | tuple[Key, ...],
    kind: str,
    limit: int,
    cursor: str | None,
    render: Callable[[list[Any]], list[T]],
    *,
    newest_first: bool = False,
    maximum: int = 2**31 - 1,
    widen: Callable[[int], tuple[Any, ...]] | None = None,
) -> Page[T]:
    """One page of `query` ordered by the unique, growing `key` (one column or several), after
    `cursor`. `widen` maps a one-number cursor given out before the key had several columns.
    """
    columns = key if isinstance(key, tuple) else (key,)
    if cursor:
        after = decode_cursor(kind, cursor, len(columns))
        query = query.where(_beyond(columns, after, newest_first, maximum, widen))
    order = [c.desc() for c in columns] if newest_first else list(columns)
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    keys = tuple(c.key for c in columns)
    return Page.of(rows, limit, kind, keys, render(rows[:limit]))


def _beyond(
    columns: tuple[Key, ...],
    after: tuple[int, ...],
    newest_first: bool,
    maximum: int,
    widen: Callable[[int], tuple[Any, ...]] | None,
) -> ColumnElement[bool]:
    """The rows a page resumes with: after `after` in the order of `columns`."""
    over = next((i for i, value in enumerate(after) if value > maximum), None)
    if len(after) < len(columns):
        if over is not None or widen is None:
            # Past the largest key the column holds (binding it would overflow): nothing follows.
            return false()
        bound: tuple[Any, ...] = widen(after[0])
    elif over is None:
        bound = after
    else:
        # No row holds a key past `maximum`: the same rows follow a key clamped to it.
        bound = after[:over] + (maximum,) * (len(after) - over)
    left: Any = columns[0] if len(columns) == 1 else tuple_(*columns)
    right: Any = bound[0]
    if len(columns) > 1:
        right = tuple_(
            *(
                value if isinstance(value, ColumnElement) else bindparam(None, value, column.type)
                for column, value in zip(columns, bound, strict=True)
            )
        )
    if newest_first:
        return left <= right if over is not None else left < right
    return left > right
