"""The outbox's operator commands: `flask --app wsgi outbox ...` (work, status, held, retry)."""

from __future__ import annotations

import re
import signal
import sys
from datetime import timedelta
from types import FrameType

import click
from flask import current_app
from flask.cli import AppGroup

from ..delivery import retention
from ..delivery.worker import Worker
from ..ops import metrics
from ..store import audit, lifecycle, queries, sealing
from ..store.engine import store
from ..store.lifecycle import STATES
from ..store.models import Enquiry
from .operator import who

outbox_cli = AppGroup("outbox", help="Deliver, inspect and repair the outbox of enquiries.")


@outbox_cli.command("work")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
def work_command(once: bool) -> None:
    """Run a delivery worker until SIGTERM or Ctrl-C (it finishes the message in flight)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    worker = Worker(app, "cli", connections=app.config["OUTBOX_CONNECTIONS"])
    if once:
        click.echo(f"Delivered {worker.run_once()} enquiries.")
        return
    port = app.config["WORKER_METRICS_PORT"]
    if port:
        metrics.serve_alone(app, port)
        click.echo(f"Serving /metrics on port {port}.")

    def stop(signum: int, _frame: FrameType | None) -> None:
        click.echo(f"Received {signal.Signals(signum).name}: stopping after the message in flight.")
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()


@outbox_cli.command("status")
def status_command() -> None:
    """Show counts per state and the age of the oldest enquiry waiting to be sent."""
    state = queries.status()
    for name in STATES:
        click.echo(f"{name:<8} {state.counts[name]}")
    click.echo(f"{queries.REFUSED:<8} {state.refused}")
    if state.oldest_pending_seconds is None:
        click.echo("oldest pending: none")
    else:
        click.echo(f"oldest pending: {_duration(state.oldest_pending_seconds)} old")
    smtp = state.smtp
    if smtp.failures:
        next_try = smtp.next_try_at.isoformat(timespec="seconds") if smtp.next_try_at else "now"
        click.echo(
            f"SMTP server failing ({smtp.failures} tries in a row) since "
            f"{smtp.failing_since:%Y-%m-%d %H:%M}Z: {smtp.reason}; next try at {next_try}"
        )
    needs_a_person = False
    if state.counts["failed"]:
        click.echo("Dead letters need a person: `flask outbox list --state failed`.", err=True)
        needs_a_person = True
    if state.refused:
        click.echo(
            "Some inboxes refused enquiries the others received: "
            "`flask outbox list --state refused`.",
            err=True,
        )
        needs_a_person = True
    if needs_a_person or smtp.failures:
        sys.exit(1)


@outbox_cli.command("list")
@click.option(
    "--state", type=click.Choice([*STATES, queries.REFUSED]), default="failed", show_default=True
)
@click.option("--limit", default=50, show_default=True)
def list_command(state: str, limit: int) -> None:
    """List enquiries in one state: id, times, attempts and last error, no personal data."""
    rows = queries.in_state(state, limit)
    if not rows:
        click.echo(f"No {state} enquiries.")
    for row in rows:
        click.echo(
            f"{row.id}  received {row.created_at:%Y-%m-%d %H:%M}Z  attempts {row.attempts}"
            f"  last error: {row.last_error or '-'}{_refusals(row)}"
        )


def _refusals(row: Enquiry) -> str:
    # A dead letter's refusals are its last error; a delivered enquiry's are news.
    refused = row.inboxes_refused()
    if not refused or row.status != lifecycle.SENT:
        return ""
    return "  refused by: " + "; ".join(f"{inbox} ({why})" for inbox, why in refused.items())


@outbox_cli.command("show")
@click.argument("enquiry_id")
def show_command(enquiry_id: str) -> None:
    """Show one enquiry in full, personal data included (opened, if sealed and the key is here)."""
    row = queries.get(enquiry_id)
    if row is None:
        raise click.ClickException(f"No enquiry {enquiry_id}.")
    audit.record(who(), "show", [enquiry_id])
    note = None
    try:
        row = sealing.opened(row, sealing.current_keys())
    except sealing.CannotOpen as error:
        note = f"The personal fields are sealed ({error}); set SEAL_PRIVATE_KEY to read them."
    for column in Enquiry.__table__.columns:
        if column.name != "sealed":
            click.echo(f"{column.name}: {getattr(row, column.name)}")
    if note:
        click.echo(note)


@outbox_cli.command("retry")
@click.argument("enquiry_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Queue every dead letter again.")
@click.option(
    "--all-refused", is_flag=True, help="Send again to the inboxes that refused an enquiry."
)
def retry_command(enquiry_ids: tuple[str, ...], all_failed: bool, all_refused: bool) -> None:
    """Queue dead letters, or enquiries some inbox refused, for delivery again."""
    if not enquiry_ids and not all_failed and not all_refused:
        raise click.UsageError("Name enquiry ids, or pass --all-failed or --all-refused.")
    if enquiry_ids:
        count = lifecycle.requeue(list(enquiry_ids))
        audit.record(who(), "retry", list(enquiry_ids))
    else:
        count = lifecycle.requeue(refused=True) if all_refused else 0
        count += lifecycle.requeue() if all_failed else 0
        audit.record(who(), "retry", detail=f"{count} enquiries (--all)")
    click.echo(f"Queued {count} enquiries again.")


@outbox_cli.command("held")
@click.option("--limit", default=50, show_default=True)
def held_command(limit: int) -> None:
    """List the submissions a spam trap held: id, time and trap, no personal data."""
    rows = queries.in_state(lifecycle.HELD, limit)
    if not rows:
        click.echo("No held enquiries.")
    for row in rows:
        click.echo(f"{row.id}  received {row.created_at:%Y-%m-%d %H:%M}Z  trap: {row.held_reason}")


@outbox_cli.command("release")
@click.argument("enquiry_ids", nargs=-1, required=True)
def release_command(enquiry_ids: tuple[str, ...]) -> None:
    """Deliver held enquiries after all: a person has read them and they are real."""
    count = lifecycle.release_held(list(enquiry_ids))
    audit.record(who(), "release", list(enquiry_ids))
    click.echo(f"Released {count} held enquiries for delivery.")
    _fail_unless_all_held(count, enquiry_ids)


@outbox_cli.command("discard")
@click.argument("enquiry_ids", nargs=-1, required=True)
def discard_command(enquiry_ids: tuple[str, ...]) -> None:
    """Erase held enquiries now: a person has read them and they are spam."""
    count = lifecycle.discard(list(enquiry_ids))
    audit.record(who(), "discard", list(enquiry_ids))
    click.echo(f"Erased {count} held enquiries.")
    _fail_unless_all_held(count, enquiry_ids)


def _fail_unless_all_held(count: int, enquiry_ids: tuple[str, ...]) -> None:
    if count < len(set(enquiry_ids)):
        raise click.ClickException("Some ids are not held enquiries (see `flask outbox held`).")


@outbox_cli.command("forget")
@click.argument("enquiry_ids", nargs=-1, required=True)
def forget_command(enquiry_ids: tuple[str, ...]) -> None:
    """Erase the personal data of dead letters now (after forwarding them by hand, say)."""
    count = lifecycle.erase_failed(enquiry_ids=list(enquiry_ids))
    audit.record(who(), "forget", list(enquiry_ids))
    if count:
        store.fold_in_log()
    click.echo(f"Erased the personal data of {count} dead letters.")
    if count < len(set(enquiry_ids)):
        raise click.ClickException(
            "Some ids are not dead letters with personal data (see `flask outbox list`)."
        )


@outbox_cli.command("audit")
@click.option("--limit", default=100, show_default=True)
def audit_command(limit: int) -> None:
    """What people did to enquiries, newest first: when, who, what, which id (kept a year)."""
    rows = audit.entries(limit)
    if not rows:
        click.echo("No audit entries.")
    for row in rows:
        target = row.enquiry_id or row.detail or "-"
        click.echo(f"{row.at:%Y-%m-%d %H:%M:%S}Z  {row.actor}  {row.action}  {target}")


@outbox_cli.command("purge")
@click.option(
    "--older-than", "older_than", default=None, help="Age like 30d, 12h; default RETENTION_DAYS."
)
def purge_command(older_than: str | None) -> None:
    """Erase the personal data of delivered enquiries past the retention period."""
    if older_than is None:
        age = timedelta(days=current_app.config["RETENTION_DAYS"])
    else:
        age = _parse_age(older_than)
    erased = retention.erase_delivered(age)
    audit.record(who(), "purge", detail=f"{erased} delivered enquiries older than {age}")
    click.echo(f"Erased the personal data of {erased} delivered enquiries.")


def _parse_age(text: str) -> timedelta:
    # An empty age is a slip (say, a script's unset variable), not a request for RETENTION_DAYS;
    # a negative one would erase every delivered enquiry, however recent.
    if not text.strip():
        raise click.BadParameter(
            "is empty; give an age like 30d, 12h or 90m, or leave it out for RETENTION_DAYS",
            param_hint="--older-than",
        )
    if text.strip().startswith("-"):
        raise click.BadParameter(
            "must not be negative; use a number and a unit: 30d, 12h or 90m",
            param_hint="--older-than",
        )
    match = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    if not match:
        raise click.BadParameter(
            "use a number and a unit: 30d, 12h or 90m", param_hint="--older-than"
        )
    amount, unit = int(match.group(1)), match.group(2)
    return {
        "d": timedelta(days=amount),
        "h": timedelta(hours=amount),
        "m": timedelta(minutes=amount),
    }[unit]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"
