"""The audit log: who did what to which enquiry, and when, kept a year, with no personal data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, select

from .engine import store
from .lifecycle import utcnow
from .models import AuditEntry

TABLE = cast(Table, AuditEntry.__table__)
COLUMNS = TABLE.c
DIGEST_LINK = "digest link"


def record(
    actor: str, action: str, enquiry_ids: Sequence[str] = (), detail: str | None = None
) -> None:
    """One entry per enquiry named (or one without an id, for an action on many)."""
    now = utcnow()
    targets: list[str | None] = list(enquiry_ids) or [None]
    rows = [
        {
            "at": now,
            "actor": actor[:100],
            "action": action,
            "enquiry_id": enquiry_id,
            "detail": detail,
        }
        for enquiry_id in targets
    ]
    with store.writing() as connection:
        connection.execute(insert(TABLE), rows)


def entries(limit: int) -> list[AuditEntry]:
    """The newest `limit` entries, newest first."""
    with store.session() as session:
        query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        return list(session.scalars(query.limit(limit)))


def forget_before(moment: datetime) -> int:
    """Drop the entries older than `moment`; return how many."""
    with store.writing() as connection:
        return connection.execute(delete(TABLE).where(COLUMNS.at < moment)).rowcount
