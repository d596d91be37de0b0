"""The outbox's gauges for /metrics: depth per state and the oldest pending age, read per scrape."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..store import queries


class OutboxGauges(Collector):
    """The outbox as it is at scrape time, read from the store: depth per state, oldest age."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Query the store once per scrape."""
        with self.app.app_context():
            state = queries.status()
        depth = GaugeMetricFamily(
            "contact_form_outbox_enquiries", "Enquiries in the outbox, by state.", labels=["state"]
        )
        for name, count in state.counts.items():
            depth.add_metric([name], count)
        yield depth
        yield GaugeMetricFamily(
            "contact_form_outbox_oldest_pending_seconds",
            "Age of the oldest pending enquiry (0 when none waits).",
            value=state.oldest_pending_seconds or 0,
        )
