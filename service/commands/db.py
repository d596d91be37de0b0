"""The store's schema commands: `flask --app wsgi db upgrade|current`."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from ..store import schema
from ..store.engine import store

db_cli = AppGroup("db", help="Manage the enquiry store's schema.")


@db_cli.command("upgrade")
def upgrade_command() -> None:
    """Apply every pending schema migration."""
    schema.upgrade(store.engine)
    click.echo(f"Store is at revision {schema.current_revision(store.engine)}.")


@db_cli.command("current")
def current_command() -> None:
    """Print the store's schema revision."""
    engine = store.engine
    click.echo(f"current: {schema.current_revision(engine)}  head: {schema.head_revision(engine)}")
