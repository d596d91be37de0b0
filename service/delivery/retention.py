"""Retention: every personal thing the service keeps has an end date, and meets it."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask

from ..store import audit, autoreplies, lifecycle
from ..store.engine import store
from .catcher import erase_caught

logger = logging.getLogger(__name__)

# The audit log holds no personal data, and a year of it answers "who read this, and when".
AUDIT_KEPT = timedelta(days=365)


def erase_delivered(older_than: timedelta) -> int:
    """Erase the personal data of enquiries delivered over `older_than` ago; return how many."""
    erased = lifecycle.erase(lifecycle.utcnow() - older_than)
    if erased:
        logger.info("retention: erased the personal data of %d delivered enquiries", erased)
        store.fold_in_log()
    return erased


def erase_failed(older_than: timedelta) -> int:
    """Erase the personal data of dead letters that failed over `older_than` ago."""
    erased = lifecycle.erase_failed(lifecycle.utcnow() - older_than)
    if erased:
        logger.info("retention: erased the personal data of %d dead letters", erased)
        store.fold_in_log()
    return erased


def erase_held(older_than: timedelta) -> int:
    """Erase the held enquiries caught over `older_than` ago; return how many."""
    erased = lifecycle.discard(created_before=lifecycle.utcnow() - older_than)
    if erased:
        logger.info("retention: erased %d held enquiries nobody released", erased)
        store.fold_in_log()
    return erased


def erase_everything_due(app: Flask) -> None:
    """Apply every retention period once: the worker does it daily."""
    config = app.config
    erase_delivered(timedelta(days=config["RETENTION_DAYS"]))
    erase_failed(timedelta(days=config["FAILED_RETENTION_DAYS"]))
    erase_held(timedelta(days=config["HELD_RETENTION_DAYS"]))
    audit.forget_before(lifecycle.utcnow() - AUDIT_KEPT)
    # A day's claims of a confirmation are spent once the day is over (in any time zone).
    autoreplies.forget_before(lifecycle.utcnow() - timedelta(days=2))
    caught = erase_caught(app, timedelta(days=config["RETENTION_DAYS"]))
    if caught:
        logger.info("retention: erased %d emails the development mail catcher saved", caught)
