"""INSERT ... ON CONFLICT DO NOTHING RETURNING, in the dialect of the store at hand."""

from __future__ import annotations

import functools
import importlib
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.sql.dml import Insert


@functools.cache
def _statement(dialect: str, table: Table, key: Column[Any]) -> Insert:
    # The dialect's module is imported on first use: an SQLite store never loads PostgreSQL's
    # dialect (2 MiB per worker), and a PostgreSQL store never loads SQLite's.
    insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert
    statement: Insert = insert(table).on_conflict_do_nothing(index_elements=[key]).returning(key)
    return statement


def insert_once(
    connection: Connection, table: Table, key: Column[Any], values: dict[str, Any]
) -> bool:
    """Insert the row unless one with the same `key` exists; True if it was inserted."""
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    statement = _statement(connection.dialect.name, table, key)
    return connection.execute(statement, values).first() is not None
