"""Health for load balancers and monitoring: /healthz (alive) and /readyz (store, schema, queue)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, current_app
from sqlalchemy.exc import SQLAlchemyError

from ..store import queries, schema
from ..store.engine import store

bp = Blueprint("health", __name__)
logger = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    """Liveness: the process answers; it needs nothing else, so a store outage restarts nothing."""
    return {"status": "ok"}, 200


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """Ready: the store answers at the current schema and no enquiry waits beyond STUCK_AFTER."""
    try:
        revision = schema.current_revision(store.engine)
        state = queries.status()
    except SQLAlchemyError as error:
        logger.error("readiness: store unreachable (%s)", type(error).__name__)
        return unready("unavailable", "the enquiry store cannot be reached")
    head = store.state.schema_head
    if revision != head:
        return unready(
            "unavailable",
            f"the store's schema is at {revision or 'nothing'}, not {head}: "
            "run `flask --app wsgi db upgrade`",
        )
    body: dict[str, Any] = {
        "status": "degraded" if state.counts["failed"] else "ok",
        "outbox": state.counts,
    }
    reasons = []
    if state.smtp.failures:
        # Enquiries are still taken and kept: the web tier is ready, delivery is not.
        reasons.append(f"delivery paused: {state.smtp.reason}")
        body["smtp"] = {
            "failures": state.smtp.failures,
            "failing_since": _iso(state.smtp.failing_since),
            "next_try_at": _iso(state.smtp.next_try_at),
        }
    if state.refused:
        body["refused"] = state.refused
        reasons.append(
            f"{state.refused} enquiries were refused by some inbox "
            "(`flask --app wsgi outbox list --state refused`)"
        )
    if reasons:
        body["status"] = "degraded"
        body["reason"] = "; ".join(reasons)
    waited = state.oldest_pending_seconds
    if waited is not None:
        body["oldest_pending_seconds"] = round(waited)
        limit = current_app.config["STUCK_AFTER"]
        if waited > limit:
            logger.error("readiness: the oldest pending enquiry has waited %d s", waited)
            return unready(
                "stuck",
                f"the oldest pending enquiry has waited {round(waited / 60)} minutes "
                f"(STUCK_AFTER is {round(limit / 60)}): check the delivery worker and the SMTP "
                "server (`flask --app wsgi outbox status`)",
                body,
            )
    return body, 200


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def unready(
    status: str, reason: str, body: dict[str, Any] | None = None
) -> tuple[dict[str, Any], int]:
    """A 503 answer that says why."""
    return {**(body or {}), "status": status, "reason": reason}, 503
