"""Counters of what happens to submissions, for Prometheus (exposed at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

# Outcomes: accepted, repeated (same idempotency key), invalid, captcha_failed, trapped,
# rate_limited, foreign_origin, expired_form.
SUBMISSIONS = Counter(
    "contact_form_submissions_total",
    "Submissions of the form and the API, by outcome.",
    ["route", "outcome"],
)


def count_submission(route: str, outcome: str) -> None:
    """Record one submission's outcome ("page" or "api" route)."""
    SUBMISSIONS.labels(route=route, outcome=outcome).inc()
