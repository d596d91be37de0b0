"""The ALTCHA payloads this process refused: the same bytes again are refused for one digest."""

from __future__ import annotations

import threading

from flask import Flask, current_app

# A robot replaying one forged or stale payload is the common case; one that sends a new
# forgery each time pays the full check and only pushes out its own older ones.
MOST = 2048


class RefusedHere:
    """Exact payload keys (`altcha_proof.exact_key`) this process refused, with the reason."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}
        self.lock = threading.Lock()

    def reason(self, key: str) -> str | None:
        """Why the payload under `key` was refused, or None if it was not refused here."""
        return self.reasons.get(key)

    def add(self, key: str, reason: str) -> None:
        """Remember a refusal; the oldest is forgotten once MOST are held."""
        with self.lock:
            if len(self.reasons) >= MOST:
                del self.reasons[next(iter(self.reasons))]
            self.reasons[key] = reason


def init_app(app: Flask) -> None:
    """Give the app an empty record: a payload's verdict depends on the app's secret."""
    app.extensions["captcha_refused"] = RefusedHere()


def known(key: str) -> str | None:
    """Why this app refused the payload under `key` before, or None."""
    refused: RefusedHere = current_app.extensions["captcha_refused"]
    return refused.reason(key)


def remember(key: str, reason: str) -> None:
    """Note that the payload under `key` was refused: its verdict can never change."""
    refused: RefusedHere = current_app.extensions["captcha_refused"]
    refused.add(key, reason)
