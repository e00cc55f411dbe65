"""The `moncreneau` command: a Flask CLI group with the service's own commands."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, routes_command, shell_command
from sqlalchemy.orm import Session

from moncreneau.app import create_app
from moncreneau.auth import keys
from moncreneau.db import write_session
from moncreneau.domain.errors import DomainError
from moncreneau.web import Runtime


def _runtime() -> Runtime:
    rt: Runtime = current_app.extensions["moncreneau"]
    return rt


@contextmanager
def _transaction() -> Iterator[Session]:
    db = write_session(_runtime().sessions)
    try:
        yield db
        db.commit()
    except DomainError as error:
        db.rollback()
        raise click.ClickException(error.message) from None
    finally:
        db.close()


def _emit(data: dict[str, Any], as_json: bool, text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


def _upgrade_database() -> None:
    from moncreneau.migrate import upgrade

    upgrade(_runtime().sessions.kw["bind"])


cli = FlaskGroup(
    create_app=lambda: create_app(),
    add_default_commands=False,
    add_version_option=False,
    help="MonCréneau: appointment booking with signed, reliable webhooks.",
)
cli.add_command(shell_command)
cli.add_command(routes_command)


@cli.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def run_command(host: str, port: int) -> None:
    """Run everything in one process on the embedded defaults (SQLite, no Redis)."""
    import waitress

    _upgrade_database()
    settings = _runtime().settings
    click.echo(f"MonCréneau on http://{host}:{port} (database {settings.database_url})")
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    waitress.serve(app, host=host, port=port, threads=16, ident="moncreneau")


@cli.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=lambda: (os.cpu_count() or 1) * 2 + 1,
    type=int,
    help="gunicorn worker processes [default: 2 x cores + 1]",
)
def api_command(host: str, port: int, workers: int) -> None:
    """Serve the API with gunicorn (production; run `moncreneau db upgrade` first)."""
    from moncreneau.server import serve

    serve(host, port, workers)


@cli.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the database schema to the latest migration."""
    _upgrade_database()
    click.echo("database is up to date")


@cli.group("org")
def org_group() -> None:
    """Organizations (tenants)."""


@org_group.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def org_create(name: str, as_json: bool) -> None:
    """Create an organization and its first API key (shown once)."""
    with _transaction() as db:
        org = keys.create_organization(db, name)
    _emit(
        org,
        as_json,
        f"organization {org['id']} {org['name']!r}\nAPI key: {org['apiKey']}\n"
        "Keep this key now: it is stored hashed and cannot be shown again.",
    )


@cli.group("key")
def key_group() -> None:
    """API keys."""


@key_group.command("create")
@click.option("--org", "org_id", required=True, type=int, help="Organization id.")
@click.option("--name", default=None, help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def key_create(org_id: int, name: str | None, as_json: bool) -> None:
    """Create another API key for an organization (shown once)."""
    with _transaction() as db:
        keys.require_organization(db, org_id)
        issued = keys.issue(db, org_id, name)
    data = {
        "id": issued.id,
        "organizationId": org_id,
        "prefix": issued.prefix,
        "apiKey": issued.key,
    }
    _emit(data, as_json, f"API key: {issued.key}")


@key_group.command("revoke")
@click.argument("prefix")
def key_revoke(prefix: str) -> None:
    """Revoke a key by its prefix (`mck_xxxxxxxx`); it answers 401 from then on."""
    with _transaction() as db:
        key = keys.revoke(db, prefix)
    click.echo(f"revoked {key['prefix']} at {key['revokedAt']}")


@key_group.command("list")
@click.option("--org", "org_id", required=True, type=int, help="Organization id.")
def key_list(org_id: int) -> None:
    """List an organization's keys (prefixes only)."""
    with _transaction() as db:
        keys.require_organization(db, org_id)
        rows = keys.list_keys(db, org_id)
    for row in rows:
        state = f"revoked {row['revokedAt']}" if row["revokedAt"] else "active"
        click.echo(f"{row['prefix']}  {row['name'] or '-'}  created {row['createdAt']}  {state}")


@cli.group("projections")
def projections_group() -> None:
    """Read models built from the event store."""


@projections_group.command("rebuild")
def projections_rebuild() -> None:
    """Rebuild every appointment row from its events."""
    from moncreneau.appointments.service import rebuild_projections

    with _transaction() as db:
        count = rebuild_projections(db)
    click.echo(f"rebuilt {count} appointment(s) from the event store")


def main() -> None:
    cli.main(prog_name="moncreneau")
