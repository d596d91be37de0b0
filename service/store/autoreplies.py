"""One confirmation per patient address a day, however many processes take enquiries: the day's
claim is a keyed digest of the address, so the table holds no address."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, delete

from .engine import store
from .insert_once import insert_once
from .lifecycle import utcnow
from .models import Autoreply

TABLE = cast(Table, Autoreply.__table__)
COLUMNS = TABLE.c


def digest(secret: str | bytes, address: str, day: str) -> str:
    """The claim's key for this address on this day."""
    key = secret.encode() if isinstance(secret, str) else secret
    text = f"autoreply|{address.strip().lower()}|{day}".encode("utf-8", "surrogatepass")
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def claim(connection: Connection, key: str) -> bool:
    """Claim today's confirmation for an address, in the caller's transaction; False if taken."""
    return insert_once(connection, TABLE, COLUMNS.digest, {"digest": key, "created_at": utcnow()})


def forget_before(moment: datetime) -> int:
    """Drop the claims made before `moment` (their day is over); return how many."""
    with store.writing() as connection:
        return connection.execute(delete(TABLE).where(COLUMNS.created_at < moment)).rowcount
