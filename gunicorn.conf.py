"""gunicorn settings, read from the working directory by `gunicorn wsgi:app`."""

import glob
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime

from gunicorn.glogging import Logger

# The web service logs one JSON object a line on stdout; CLI commands keep stdout for their output.
os.environ.setdefault("LOG_STREAM", "stdout")
# Every worker writes its Prometheus counts here, so /metrics can add them up; a folder made here
# is removed again when gunicorn exits.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="contact-form-metrics-")
    _OWN_METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]
else:
    _OWN_METRICS_DIR = None

bind = os.environ.get("BIND", "0.0.0.0:8000")
# A worker per CPU the process may use; with more than one, share the rate-limit counts in Redis.
workers = int(os.environ.get("WEB_CONCURRENCY") or len(os.sched_getaffinity(0)))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
# Longer than MAIL_TIMEOUT (30 s): an embedded worker's message in flight may finish on shutdown.
graceful_timeout = 40
keepalive = 5
accesslog = "-"
# gunicorn's control socket sits at one fixed path per user: several servers on a host collide.
control_socket_disable = True


class JSONAccessLogger(Logger):
    """gunicorn's access log as one JSON object a line, with the service's request id."""

    def access(self, resp, req, environ, request_time):
        """Log one request: no query string and no body, so nothing the visitor typed."""
        # gunicorn's own flag, worked out when the settings load, rather than three settings
        # read through its Config on every request.
        if not self.access_log_enabled:
            return
        request_id = next(
            (value for name, value in resp.headers if name.lower() == "x-request-id"), None
        )
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "INFO",
            "logger": "gunicorn.access",
            "method": req.method,
            "path": req.path,
            "status": resp.status_code,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 2),
            "request_id": request_id,
        }
        self.access_log.info(json.dumps(entry))


logger_class = JSONAccessLogger


def on_starting(server):
    """Start each run with empty metric files (counts of dead workers would linger)."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def on_exit(server):
    """Remove the metrics folder this configuration made."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)


def when_ready(server):
    """Warn when several workers would each keep their own rate-limit counts."""
    storage = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    if server.cfg.workers > 1 and storage.startswith("memory://"):
        server.log.warning(
            "RATELIMIT_STORAGE_URI is %s with %d workers: each worker counts on its own, so a "
            "client may send %d times the configured limit. Set RATELIMIT_STORAGE_URI=redis://... "
            "to share one count, or run one worker (WEB_CONCURRENCY=1).",
            storage,
            server.cfg.workers,
            server.cfg.workers,
        )


def _embedded_worker(worker):
    """The delivery worker inside this gunicorn worker's app, if it runs one."""
    delivery = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("delivery")
    return getattr(delivery, "embedded", None)


def post_worker_init(worker):
    """Start the embedded delivery worker now, so a restarted process sends its backlog at once."""
    embedded = _embedded_worker(worker)
    if embedded is not None:
        embedded.ensure_running()


def worker_exit(server, worker):
    """Let the embedded delivery worker finish the message it is sending before the exit."""
    embedded = _embedded_worker(worker)
    if embedded is not None:
        embedded.stop(graceful_timeout - 5)


def child_exit(server, worker):
    """Fold a finished worker's metrics into the totals of the dead."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
