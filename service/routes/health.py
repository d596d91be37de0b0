"""The health check for load balancers and the operator."""

from __future__ import annotations

import logging

from flask import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from .. import outbox

bp = Blueprint("health", __name__)
logger = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    """`ok` when the store answers; `degraded` (still 200) when dead letters wait for a person."""
    try:
        state = outbox.status()
    except SQLAlchemyError as error:
        logger.error("health check: store unreachable (%s)", type(error).__name__)
        return {"status": "unavailable", "reason": "the enquiry store cannot be reached"}, 503
    body = {"status": "degraded" if state.counts["failed"] else "ok", "outbox": state.counts}
    if state.oldest_pending_seconds is not None:
        body["oldest_pending_seconds"] = round(state.oldest_pending_seconds)
    return body, 200
