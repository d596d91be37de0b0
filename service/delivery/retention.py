"""Retention: delivered enquiries lose their personal data, held ones are erased, on time."""

from __future__ import annotations

import logging
from datetime import timedelta

from ..store import lifecycle

logger = logging.getLogger(__name__)


def erase_delivered(older_than: timedelta) -> int:
    """Erase the personal data of enquiries delivered over `older_than` ago; return how many."""
    erased = lifecycle.erase(lifecycle.utcnow() - older_than)
    if erased:
        logger.info("retention: erased the personal data of %d delivered enquiries", erased)
    return erased


def erase_held(older_than: timedelta) -> int:
    """Erase the held enquiries caught over `older_than` ago; return how many."""
    erased = lifecycle.discard(created_before=lifecycle.utcnow() - older_than)
    if erased:
        logger.info("retention: erased %d held enquiries nobody released", erased)
    return erased
