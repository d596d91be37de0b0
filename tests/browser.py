"""Real-browser test parts: the service on a real port, a host site on another origin, Chromium."""

from __future__ import annotations

import http.server
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.served import ServedInThread

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "tests" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Chromium's own setting "Block third-party cookies", written into the profile before it starts.
BLOCK_THIRD_PARTY_COOKIES = {
    "profile": {"block_third_party_cookies": True, "cookie_controls_mode": 1}
}
# The WCAG 2.0, 2.1 and 2.2 A and AA rules, and axe's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def chromium_path() -> str:
    """Debian's Chromium; without it the browser tests skip, except in CI where they fail."""
    from tests.conftest import IN_CI

    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        message = "the browser tests need Debian's Chromium: apt-get install chromium"
        if IN_CI:
            pytest.fail(f"CI must run the browser tests: {message}")
        pytest.skip(message)
    return path


def axe_source() -> str:
    """axe-core from the npm registry (scripts/test installs it into tests/node_modules)."""
    from tests.conftest import IN_CI

    if not AXE.is_file():
        message = "axe-core is missing: run npm ci --prefix tests"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return AXE.read_text(encoding="utf-8")


def block_third_party_cookies(profile: Path) -> None:
    """Prepare a Chromium profile that refuses third-party cookies."""
    (profile / "Default").mkdir(parents=True, exist_ok=True)
    (profile / "Default" / "Preferences").write_text(json.dumps(BLOCK_THIRD_PARTY_COOKIES))


class LiveServer(ServedInThread):
    """A Flask app served by Werkzeug on 127.0.0.1 in a thread, for the browser to reach."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.serve(make_server("127.0.0.1", 0, app, threaded=True))
        self.origin = f"http://127.0.0.1:{self.server.server_port}"

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        return self.origin + path


class HostSite(ServedInThread):
    """The clinic's own website: static pages on 127.0.0.1, visited as http://localhost:PORT.

    localhost and 127.0.0.1 are different sites to the browser, so the form it embeds from the
    service on 127.0.0.1 is a third-party frame, with third-party cookie rules.
    """

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                body = pages.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.origin = f"http://localhost:{self.server.server_address[1]}"

    def page(self, path: str, body: str) -> str:
        """Serve `body` at `path` and return its URL."""
        self.pages[path] = body
        return self.origin + path


def article(body: str) -> str:
    """A host page in the style of the clinic's blog, with `body` where the form goes."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lower back pain: when to see a physio</title></head>
<body style="font-family: Georgia, serif; max-width: 48rem; margin: 0 auto; padding: 1rem">
<main><article>
<h1>Lower back pain: when to see a physio</h1>
<p>Most back pain settles within a few weeks. If yours has not, we can help.</p>
{body}
</article></main>
</body></html>"""
