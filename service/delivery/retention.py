"""Retention: the personal data of delivered enquiries is erased once its period ends."""

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
