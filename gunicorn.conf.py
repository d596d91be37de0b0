"""gunicorn settings, read from the working directory by `gunicorn wsgi:app`."""

import os

bind = os.environ.get("BIND", "0.0.0.0:8000")
# One process by default: the rate limits count in its memory and its embedded worker delivers.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 40


def when_ready(server):
    """Warn when several workers would each keep their own rate-limit counts."""
    storage = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    if server.cfg.workers > 1 and storage.startswith("memory://"):
        server.log.warning(
            "RATELIMIT_STORAGE_URI is %s with %d workers: each worker counts on its own, so a "
            "client may send %d times the configured limit. Set RATELIMIT_STORAGE_URI=redis://... "
            "to share one count, or run one worker.",
            storage,
            server.cfg.workers,
            server.cfg.workers,
        )
