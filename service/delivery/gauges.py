"""The outbox's gauges for /metrics, read per scrape: depth, age, refusals, SMTP failures."""

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
        yield GaugeMetricFamily(
            "contact_form_outbox_refused_enquiries",
            "Delivered enquiries that some inbox refused for good, awaiting a person.",
            value=state.refused,
        )
        yield GaugeMetricFamily(
            "contact_form_smtp_failures_in_a_row",
            "Failed tries of the SMTP server since it last accepted (0 while it works); the "
            "whole queue is backed off while this is above 0.",
            value=state.smtp.failures,
        )
