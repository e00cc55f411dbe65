"""PostgreSQL bulk inserts: one array per column in one short statement, shared values once."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import CursorResult, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import TextClause

from moncreneau.db import Base

# How a column travels: one value for every row, distinct values and an index per row, or
# one value per row. A fan-out repeats one body and one timestamp for a thousand rows, and
# psycopg spends far longer quoting each copy than the server takes to store them.
SHARED, LOOKUP, ARRAY = "shared", "lookup", "array"


def columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The same rows as one list per key, for `unnest`."""
    return {key: [row[key] for row in rows] for key in rows[0]}


def _encode(name: str, values: list[Any], params: dict[str, Any]) -> str:
    distinct = dict.fromkeys(values)
    if len(distinct) == 1:
        params[name] = values[0]
        return SHARED
    if 2 * len(distinct) <= len(values):
        index = {value: n for n, value in enumerate(distinct, 1)}
        params[name] = list(distinct)
        params[f"{name}__i"] = [index[value] for value in values]
        return LOOKUP
    params[name] = values
    return ARRAY


@functools.cache
def _statement(model: type[Base], shape: tuple[tuple[str, str], ...], suffix: str) -> TextClause:
    table = model.__table__
    assert isinstance(table, Table)
    dialect = postgresql.dialect()
    selected: list[str] = []
    arrays: list[str] = []
    aliases: list[str] = []
    for name, how in shape:
        sql_type = table.c[name].type.compile(dialect)
        if how == SHARED:
            selected.append(f"CAST(:{name} AS {sql_type})")
            continue
        aliases.append(name)
        if how == LOOKUP:
            selected.append(f"(CAST(:{name} AS {sql_type}[]))[u.{name}]")
            arrays.append(f"CAST(:{name}__i AS integer[])")
        else:
            selected.append(f"u.{name}")
            arrays.append(f"CAST(:{name} AS {sql_type}[])")
    source = f" FROM unnest({', '.join(arrays)}) AS u({', '.join(aliases)})" if arrays else ""
    names = ", ".join(name for name, _ in shape)
    return text(f"INSERT INTO {table.name} ({names}) SELECT {', '.join(selected)}{source} {suffix}")


def insert_rows(
    connection: Connection, model: type[Base], rows: Sequence[dict[str, Any]], suffix: str = ""
) -> CursorResult[Any]:
    """Insert dicts with the same keys; `suffix` may add ON CONFLICT or RETURNING."""
    params: dict[str, Any] = {}
    shape = [(name, _encode(name, values, params)) for name, values in columns(rows).items()]
    if len(rows) > 1 and all(how == SHARED for _, how in shape):
        # Rows alike in every column still count: one of them travels as an array.
        name = shape[0][0]
        params[name] = [params[name]] * len(rows)
        shape[0] = (name, ARRAY)
    return connection.execute(_statement(model, tuple(shape), suffix), params)
