"""The tables of the enquiry store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Index, Integer, String, Text
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    configure_mappers,
    instrumentation,
    mapped_column,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        """Store aware datetimes as naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Read naive UTC back as aware."""
        if value is None:
            return None
        aware: datetime = value.replace(tzinfo=UTC)
        return aware


class Base(DeclarativeBase):
    """Declarative base for the store's tables."""


class Enquiry(Base):
    """One enquiry from the form, and its place in the outbox."""

    __tablename__ = "enquiries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Personal data: emptied by the retention purge once the enquiry has been delivered.
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    page_url: Mapped[str | None] = mapped_column(String(2000))
    # With SEAL_PUBLIC_KEY set, the five fields above are NULL and live here, sealed
    # (store/sealing.py), with the id of the key they are sealed to.
    sealed: Mapped[str | None] = mapped_column(Text)
    sealed_to: Mapped[str | None] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    message_id: Mapped[str] = mapped_column(String(255))

    # One of lifecycle.STATES, written only by the lifecycle module.
    status: Mapped[str] = mapped_column(String(16))
    # When it last entered the queue (on arrival, or by `outbox retry`): the give-up clock
    # starts here.
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    # What went wrong last, without personal data: an SMTP code and reply, or an error class.
    last_error: Mapped[str | None] = mapped_column(String(500))
    # The clinic inboxes (not the patient's) that accepted the email, and those that refused it
    # for good with the reason: JSON, written by the lifecycle module. A retry goes only to the
    # inboxes in neither.
    delivered_to: Mapped[str | None] = mapped_column(Text)
    # The confirmation to the patient (AUTORESPONDER): None, or "due", "sent", "refused".
    autoreply: Mapped[str | None] = mapped_column(String(16))
    # The spam trap that caught it (held until a person releases it), kept once released so
    # that the email can say so.
    held_reason: Mapped[str | None] = mapped_column(String(50))
    refused_to: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_enquiries_status_next_attempt", "status", "next_attempt_at"),
        Index("ix_enquiries_status_created", "status", "created_at"),
    )

    @classmethod
    def detached(cls, values: Mapping[str, Any]) -> Enquiry:
        """An enquiry no session knows, holding these column values, built as the ORM loads one."""
        # The constructor sets each attribute through the ORM's change events: 50 us for a row of
        # 25 columns, twice per email delivered (the claim, the opened copy). Loading fills the
        # instance's dict instead; nothing here is ever flushed, so no change needs recording.
        enquiry: Enquiry = instrumentation.manager_of_class(cls).new_instance()
        enquiry.__dict__.update(values)
        return enquiry

    def inboxes_delivered(self) -> list[str]:
        """The inboxes that have accepted this enquiry's email."""
        return list(json.loads(self.delivered_to)) if self.delivered_to else []

    def inboxes_refused(self) -> dict[str, str]:
        """The inboxes that refused it for good, each with the reason."""
        return dict(json.loads(self.refused_to)) if self.refused_to else {}


class Destination(Base):
    """The SMTP server's health as the workers found it: backed off as a whole while it fails."""

    __tablename__ = "destinations"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Failures in a row at connect, login or MAIL FROM; 0 while the server accepts.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(String(500))
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # No worker connects before then: one login per back-off period, whatever the workers.
    next_try_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class HeldDigest(Base):
    """One day's digest of held enquiries: claimed by the worker that sends it, once."""

    __tablename__ = "held_digests"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, clinic time
    # The digest lists what was held before then (and after the previous digest's).
    covered_until: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """Who did what to which enquiry, and when; never any personal data."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # The operating-system user who ran a command, or "digest link".
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(20))
    enquiry_id: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(200))


class Alert(Base):
    """When the operator was last alerted of one cause: at most one email an hour each."""

    __tablename__ = "alerts"

    cause: Mapped[str] = mapped_column(String(20), primary_key=True)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Autoreply(Base):
    """A confirmation promised to one patient's address on one day: a keyed digest of both."""

    __tablename__ = "autoreplies"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class UsedCaptcha(Base):
    """A captcha solution that has been accepted once, kept until its challenge expires."""

    __tablename__ = "used_captchas"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


# Set up now, not at the first constructor call: Enquiry.detached builds instances without one.
configure_mappers()
