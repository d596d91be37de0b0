"""The ALTCHA payloads this process refused: the same bytes again are refused for one digest."""

from __future__ import annotations

from flask import Flask, current_app

from ..bounded import REFUSALS_HELD, Bounded

MOST = REFUSALS_HELD


class RefusedHere(Bounded[str, str]):
    """Exact payload keys (`altcha_proof.exact_key`) this process refused, with the reason."""

    def __init__(self) -> None:
        super().__init__(MOST)

    @property
    def reasons(self) -> dict[str, str]:
        """The payload keys held, oldest first, with why each was refused."""
        return self.entries

    def reason(self, key: str) -> str | None:
        """Why the payload under `key` was refused, or None if it was not refused here."""
        return self.get(key)


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
