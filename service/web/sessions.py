"""Flask's cookie session, switched off: the service neither reads nor sets a cookie."""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface


class NoSessions(SessionInterface):
    """Flask's session switched off: the service neither reads nor sets a cookie."""

    def open_session(self, app: Flask, request: Request) -> None:
        """No session: Flask hands views a null one, which refuses to be written."""
        # Flask's cookie session would build a signing serializer on every request, for nothing.
        return None

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        """Nothing to save."""
