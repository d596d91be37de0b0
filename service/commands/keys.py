"""`flask --app wsgi keys generate|reseal`: the key pair enquiries are sealed to at rest."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from ..store import audit, lifecycle, queries, sealing
from .operator import who

keys_cli = AppGroup("keys", help="The key pair that seals patients' enquiries at rest.")
BATCH = 500


@keys_cli.command("generate")
def generate_command() -> None:
    """Print a new key pair: the public key for every process, the private for the worker."""
    public, private = sealing.generate()
    click.echo(f"SEAL_PUBLIC_KEY={public}")
    click.echo(f"SEAL_PRIVATE_KEY={private}")
    click.echo(
        "Give SEAL_PUBLIC_KEY to the web service and the worker, SEAL_PRIVATE_KEY to the worker "
        "and the operator's commands only, and keep a copy of the private key apart from the "
        "database's backups: without it the stored enquiries cannot be read.",
        err=True,
    )


@keys_cli.command("reseal")
def reseal_command() -> None:
    """Seal every stored enquiry anew to the current SEAL_PUBLIC_KEY (after a key change)."""
    keys = sealing.current_keys()
    if keys.public is None:
        raise click.ClickException("SEAL_PUBLIC_KEY is not set: there is no key to seal to.")
    resealed = unreadable = 0
    after = ""
    while batch := queries.with_personal_data(after, BATCH):
        after = batch[-1].id
        for enquiry in batch:
            if enquiry.sealed_to == keys.public_id:
                continue
            try:
                plain = sealing.opened(enquiry, keys)
            except sealing.CannotOpen:
                unreadable += 1
                continue
            values = {name: getattr(plain, name) for name in sealing.FIELDS}
            row = sealing.sealed_row({"id": enquiry.id, **values}, keys)
            resealed += lifecycle.reseal(enquiry, row)
    audit.record(who(), "reseal", detail=f"{resealed} enquiries to key {keys.public_id}")
    click.echo(f"Sealed {resealed} enquiries to key {keys.public_id}.")
    if unreadable:
        raise click.ClickException(
            f"{unreadable} enquiries are sealed to a key SEAL_PRIVATE_KEY does not hold; "
            "add that key (after the current one) and run this again."
        )
