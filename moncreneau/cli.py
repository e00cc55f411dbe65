"""The `moncreneau` command: a Flask CLI group with the service's own commands."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, routes_command, shell_command
from sqlalchemy.orm import Session

from moncreneau.api.web import runtime
from moncreneau.app import create_app
from moncreneau.auth import keys
from moncreneau.config import ConfigError
from moncreneau.db import write_session
from moncreneau.domain.errors import DomainError
from moncreneau.ops import logs


@contextmanager
def _transaction() -> Iterator[Session]:
    db = write_session(runtime().sessions)
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
    from moncreneau.ops.migrate import upgrade

    upgrade(runtime().sessions.kw["bind"], vault=runtime().vault)


def _create_app() -> Flask:
    """The app on the environment's settings, every one checked before any work starts."""
    try:
        return create_app()
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None


cli = FlaskGroup(
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    help="MonCréneau: appointment booking with signed, reliable webhooks.",
)
cli.add_command(shell_command)
cli.add_command(routes_command)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def _require_redis() -> str:
    url = runtime().settings.redis_url
    if not url:
        raise click.ClickException(
            "REDIS_URL is not set: the production processes share work through Redis. "
            "For everything in one process without Redis, use `moncreneau run`."
        )
    return url


@cli.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def run_command(host: str, port: int) -> None:
    """Run everything in one process on the embedded defaults (SQLite, no Redis)."""
    import waitress

    from moncreneau.delivery import jobs
    from moncreneau.delivery.queueing import InlineQueue
    from moncreneau.ops.housekeeping import Housekeeper
    from moncreneau.outbox import relay

    _upgrade_database()
    rt = runtime()
    if "MONCRENEAU_LOG_FORMAT" not in os.environ:
        # Someone is reading this in a terminal; production processes log JSON.
        logs.configure(rt.settings.log_level, "text")
    if "MONCRENEAU_ALLOW_PRIVATE_URLS" not in os.environ:
        # The one-process mode is for development: receivers on this machine are the point.
        rt.settings = rt.settings.replace(allow_private_urls=True)
    settings = rt.settings
    # The same relay and wake-up job as the production processes, run by a thread.
    context = jobs.install(settings, rt.sessions)
    rt.queue = InlineQueue(settings, partial(jobs.wake_with, context))
    stop = threading.Event()
    chores = Housekeeper(rt.sessions, settings, rt.vault)
    threading.Thread(
        target=relay.run,
        args=(rt.sessions, settings, rt.queue, stop, chores),
        name="relay",
        daemon=True,
    ).start()
    click.echo(f"MonCréneau on http://{host}:{port} (database {settings.database_url})")
    if settings.allow_private_urls:
        click.echo(
            "webhook URLs may be http and private addresses (development); "
            "MONCRENEAU_ALLOW_PRIVATE_URLS=false refuses them"
        )
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        waitress.serve(app, host=host, port=port, threads=16, ident="moncreneau")
    finally:
        stop.set()


_metrics_port = click.option(
    "--metrics-port",
    envvar="MONCRENEAU_METRICS_PORT",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this process's Prometheus metrics on this port.",
)
_metrics_host = click.option(
    "--metrics-host",
    envvar="MONCRENEAU_METRICS_HOST",
    default="127.0.0.1",
    show_default=True,
)


def _serve_metrics(host: str, port: int | None) -> None:
    if port is not None:
        from moncreneau.ops import metrics

        metrics.serve(port, host)
        click.echo(f"metrics on http://{host}:{port}/metrics")


@cli.command("relay")
@_metrics_port
@_metrics_host
def relay_command(metrics_port: int | None, metrics_host: str) -> None:
    """Create deliveries from the event log and queue them (production; any number may run)."""
    from moncreneau.delivery.queueing import RedisQueue
    from moncreneau.ops.housekeeping import Housekeeper
    from moncreneau.outbox import relay

    _require_redis()
    _serve_metrics(metrics_host, metrics_port)
    rt = runtime()
    stop = _stop_on_signals()
    click.echo("relay started")
    chores = Housekeeper(rt.sessions, rt.settings, rt.vault)
    relay.run(rt.sessions, rt.settings, RedisQueue(rt.settings), stop, chores)
    click.echo("relay stopped")


@cli.command("worker")
@click.option("--burst", is_flag=True, help="Stop once the queue is empty.")
@_metrics_port
@_metrics_host
def worker_command(burst: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Send queued deliveries (production; any number may run)."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    from moncreneau.delivery import jobs
    from moncreneau.delivery.queueing import rq_queue

    url = _require_redis()
    _serve_metrics(metrics_host, metrics_port)
    rt = runtime()
    context = jobs.install(rt.settings, rt.sessions)
    jobs.warm(context)
    queue = rq_queue(url, rt.settings.queue_name)
    # SimpleWorker runs jobs in this process, so the dispatcher's requests in flight and
    # pooled connections outlive each job instead of dying with a forked child.
    worker = SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer)
    try:
        worker.work(burst=burst, logging_level=rt.settings.log_level, with_scheduler=False)
    finally:
        context.dispatcher.drain(rt.settings.delivery_timeout + 5)


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
    from moncreneau.ops.server import serve

    serve(host, port, workers)


@cli.command("listen")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
@click.option(
    "--secret",
    envvar="MONCRENEAU_WEBHOOK_SECRET",
    default=None,
    help="The webhook's whsec_ secret, to verify signatures.",
)
@click.option(
    "--api",
    "api_url",
    default=None,
    help="A running MonCréneau (http://127.0.0.1:8000): subscribe this receiver to it.",
)
@click.option("--key", envvar="MONCRENEAU_API_KEY", default=None, help="API key, with --api.")
@click.option(
    "--events",
    default="*",
    show_default=True,
    help="With --api: comma-separated event types to subscribe to.",
)
@click.option("--forward-to", default=None, help="Also POST each verified delivery here.")
@click.option(
    "--fail-next",
    default=0,
    type=int,
    help="Answer 500 to the next N deliveries, to watch retries.",
)
def listen_command(
    host: str,
    port: int,
    secret: str | None,
    api_url: str | None,
    key: str | None,
    events: str,
    forward_to: str | None,
    fail_next: int,
) -> None:
    """Receive deliveries locally, verify them and print one line each.

    With --api and --key it subscribes itself (the server must allow private URLs) and
    deletes that webhook when stopped. POST /_listen/fail?count=N to fail the next N.
    """
    from moncreneau.integrator.listen import FAIL_PATH, Listener, api_call, serve

    listener = Listener(secret, click.echo, forward_to, fail_next)
    server = serve(host, port, listener)
    url = f"http://{host}:{server.server_port}/"
    webhook: dict[str, Any] | None = None
    if api_url:
        if not key:
            raise click.ClickException("--api needs --key (or MONCRENEAU_API_KEY).")
        try:
            webhook = api_call(
                api_url,
                key,
                "POST",
                "/webhooks",
                {"url": url, "events": events.split(","), "description": "moncreneau listen"},
            )
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None
        listener.secret = webhook["secret"]
        click.echo(f"subscribed as webhook {webhook['id']} to {events}")
    click.echo(
        f"listening on {url} (Ctrl-C to stop; POST {url.rstrip('/')}{FAIL_PATH}"
        "?count=N fails the next N)"
    )

    def _interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if webhook and api_url and key:
            try:
                api_call(api_url, key, "DELETE", f"/webhooks/{webhook['id']}")
                click.echo(f"deleted webhook {webhook['id']}")
            except RuntimeError as error:
                click.echo(f"could not delete webhook {webhook['id']}: {error}")


@cli.command("trigger")
@click.argument("event_type", metavar="TYPE")
@click.option("--org", "org_id", required=True, type=int, help="Organization id.")
@click.option(
    "--webhook",
    "webhook_id",
    type=int,
    default=None,
    help="Send to this webhook only (default: every webhook that subscribes).",
)
def trigger_command(event_type: str, org_id: int, webhook_id: int | None) -> None:
    """Send a realistic sample event of TYPE through the real pipeline.

    Appointment events come from a real sample appointment (booked in a sample department
    a month ahead, then changed as TYPE needs), so a cancellation comes after its booking.
    A running `moncreneau run`, or relay and worker, delivers them.
    """
    from moncreneau.integrator.trigger import trigger

    rt = runtime()
    with _transaction() as db:
        keys.require_organization(db, org_id)
        events = trigger(db, org_id, event_type, rt.settings, webhook_id, rt.vault)
        lines = [f"{e.type:<24} {e.id}" for e in events]
    target = f"webhook {webhook_id}" if webhook_id else "every webhook that subscribes"
    click.echo("\n".join(lines) + f"\nqueued for {target}")


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


@cli.group("secrets")
def secrets_group() -> None:
    """Stored webhook secrets."""


@secrets_group.command("reseal")
def secrets_reseal() -> None:
    """Seal every stored secret and data key with the first key of MONCRENEAU_SECRET_KEY."""
    from moncreneau.personal import reseal
    from moncreneau.secretbox import reseal_stored

    with _transaction() as db:
        count = reseal_stored(db, runtime().box) + reseal(db, runtime().vault)
    click.echo(f"{count} secrets sealed with the first key; the others may now be dropped")


@cli.group("projections")
def projections_group() -> None:
    """Read models built from the event store."""


@projections_group.command("rebuild")
def projections_rebuild() -> None:
    """Rebuild every appointment row from its events."""
    from moncreneau.appointments.service import rebuild_projections

    with _transaction() as db:
        count = rebuild_projections(db, runtime().vault)
    click.echo(f"rebuilt {count} appointment(s) from the event store")


@cli.group("deliveries")
def deliveries_group() -> None:
    """Webhook deliveries."""


@deliveries_group.command("replay")
@click.option("--org", "org_id", required=True, type=int, help="Organization id.")
@click.option("--webhook", "webhook_id", required=True, type=int, help="Webhook id.")
@click.option("--from", "since", required=True, type=click.DateTime(), help="UTC start.")
@click.option("--to", "until", required=True, type=click.DateTime(), help="UTC end.")
@click.option("--dead-only", is_flag=True, help="Only dead deliveries, not failed ones.")
def deliveries_replay(
    org_id: int, webhook_id: int, since: datetime, until: datetime, dead_only: bool
) -> None:
    """Give failed and dead deliveries created in [--from, --to) one more attempt now."""
    from moncreneau.delivery.store import DEAD, FAILED
    from moncreneau.webhooks import deliveries as delivery_log

    statuses = (DEAD,) if dead_only else (FAILED, DEAD)
    with _transaction() as db:
        total = 0
        more = True
        while more:
            ids, more = delivery_log.replay(
                db,
                org_id,
                webhook_id,
                since.replace(tzinfo=UTC),
                until.replace(tzinfo=UTC),
                statuses,
            )
            total += len(ids)
    click.echo(f"{total} delivery(ies) scheduled again")


def main() -> None:
    cli.main(prog_name="moncreneau")
