"""Prometheus metrics: what happens to submissions and deliveries, the outbox, request latency.

Under gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py does) so
that /metrics adds up every worker's counts.
"""

from __future__ import annotations

import functools
import hmac
import os
import threading
import time

from flask import Blueprint, Flask, Response, abort, current_app, g, has_request_context, request
from flask.globals import request_ctx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import REGISTRY, Collector
from werkzeug.serving import BaseWSGIServer, make_server

SUBMISSIONS = Counter(
    "contact_form_submissions_total",
    "Submissions of the form and the API, by outcome: accepted, repeated, invalid, "
    "captcha_failed, held (caught by a spam trap and kept for a person), trapped (caught, and "
    "too invalid to keep), rate_limited, foreign_origin, expired_form.",
    ["route", "outcome"],
)
INVALID_FIELDS = Counter(
    "contact_form_invalid_fields_total",
    "Fields that failed validation, by field.",
    ["field"],
)
DELIVERIES = Counter(
    "contact_form_deliveries_total",
    "Delivery attempts by outcome: sent, retry, dead_letter, and refused (delivered, but "
    "refused for good by some inbox).",
    ["outcome"],
)
SMTP_FAILURES = Counter(
    "contact_form_smtp_failures_total",
    "Tries of the SMTP server that failed before any message (connect, TLS, EHLO, STARTTLS, "
    "AUTH, MAIL), each pausing the whole queue, by step.",
    ["step"],
)
LOST_CLAIMS = Counter(
    "contact_form_lost_claims_total",
    "State changes a worker could not make because its claim on the enquiry had been taken "
    "over or released, by transition.",
    ["transition"],
)
TAKEN_OVER = Counter(
    "contact_form_claims_taken_over_total",
    "Enquiries claimed from a worker whose lease had run out (it died, or stalled).",
)
LATENCY = Histogram(
    "contact_form_request_seconds",
    "Time to answer a request, by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

bp = Blueprint("metrics", __name__)


# Each label set's child, found once: `labels()` takes a lock and builds its key on every call,
# and every label here comes from a short fixed list (routes, outcomes, fields).
_submissions = functools.cache(SUBMISSIONS.labels)
_invalid_fields = functools.cache(INVALID_FIELDS.labels)
_latency = functools.cache(LATENCY.labels)


def count_submission(route: str, outcome: str) -> None:
    """Record one submission's outcome ("page" or "api" route) and note it for the request log."""
    _submissions(route, outcome).inc()
    if has_request_context():
        g.outcome = outcome


def count_invalid_fields(fields: list[str]) -> None:
    """Record which fields a rejected submission got wrong."""
    for field in fields:
        _invalid_fields(field).inc()


def count_delivery(outcome: str) -> None:
    """Record one delivery attempt's outcome."""
    DELIVERIES.labels(outcome=outcome).inc()


def count_smtp_failure(step: str) -> None:
    """Record a failure of the SMTP server itself, at one step."""
    SMTP_FAILURES.labels(step=step).inc()


def count_lost_claim(transition: str) -> None:
    """Record a worker's state change refused because it no longer held the claim."""
    LOST_CLAIMS.labels(transition=transition).inc()


def count_taken_over(count: int) -> None:
    """Record claims taken over from a worker that stopped renewing them."""
    TAKEN_OVER.inc(count)


class ScrapeCollectors:
    """This app's collectors read at scrape time (the outbox's gauges, registered by delivery)."""

    def __init__(self) -> None:
        self.collectors: list[Collector] = []

    def add(self, collector: Collector) -> None:
        """Read `collector` on every scrape of this app's /metrics."""
        self.collectors.append(collector)

    def latest(self) -> bytes:
        """Their metrics now, in Prometheus' text format."""
        registry = CollectorRegistry()
        for collector in self.collectors:
            registry.register(collector)
        return generate_latest(registry)


def add_scrape_collector(app: Flask, collector: Collector) -> None:
    """Have this app's /metrics read `collector` at every scrape."""
    app.extensions["metrics"].add(collector)


@bp.get("/metrics")
def metrics() -> Response:
    """The metrics in Prometheus' text format, for a scraper that presents METRICS_TOKEN."""
    return exposition(current_app, request.headers.get("Authorization", ""))


def exposition(app: Flask, authorization: str) -> Response:
    """This process's metrics and the app's scrape-time ones, if `authorization` may see them."""
    token = app.config["METRICS_TOKEN"]
    given = authorization.removeprefix("Bearer ").strip()
    # Closed unless a token is set; a wrong token looks exactly like no endpoint at all.
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        abort(404)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        workers = CollectorRegistry()
        multiprocess.MultiProcessCollector(workers)  # type: ignore[no-untyped-call]
        body = generate_latest(workers)
    else:
        body = generate_latest(REGISTRY)
    with app.app_context():
        now = app.extensions["metrics"].latest()
    return Response(body + now, mimetype=CONTENT_TYPE_LATEST)


def serve_alone(app: Flask, port: int) -> BaseWSGIServer:
    """Serve only /metrics on `port` from a thread: for the worker, which serves no app."""
    only_metrics = Flask("service.ops.metrics")

    @only_metrics.get("/metrics")
    def worker_metrics() -> Response:
        return exposition(app, request.headers.get("Authorization", ""))

    # All interfaces: in the compose layout the scraper is in another container. The token
    # rule is the web's: without METRICS_TOKEN there is nothing to see.
    server = make_server("0.0.0.0", port, only_metrics, threaded=True)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server


def observe_latency(response: Response) -> Response:
    """Record how long the request took, by route."""
    started = vars(g).get("started")
    if started is not None:
        _latency(request_ctx.request.endpoint or "none").observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Serve /metrics and time every request."""
    app.extensions["metrics"] = ScrapeCollectors()
    app.register_blueprint(bp)
    app.after_request(observe_latency)
