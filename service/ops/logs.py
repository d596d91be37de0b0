"""Logging: one JSON object a line, a request id on every request, and no personal data."""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import re
import sys
import time
import traceback
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context
from flask.globals import request_ctx

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Fields a log call may add with `extra=`; nothing else from a record reaches the output.
EXTRA_FIELDS = ("route", "method", "path", "status", "latency_ms", "outcome", "reason", "enquiry")
# Each request's one line.
_requests = logging.getLogger("service.requests")
# Lines a handler holds for its writer; past this a stalled stream makes the caller wait for it,
# as a plain handler would, instead of holding lines without end (a flood logs thousands a second).
WAITING_LINES_HELD = 10_000


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout or sys.stderr is at the time (test runners swap them)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_of_stream = name
        # Finished lines not yet written; whoever holds the lock writes them all.
        self.pending: collections.deque[str] = collections.deque()
        # A child must not write its parent's lines again.
        os.register_at_fork(after_in_child=self.pending.clear)

    @property
    def stream(self) -> object:
        return getattr(sys, self.name_of_stream)

    @stream.setter
    def stream(self, _value: object) -> None:
        pass

    def handle(self, record: logging.LogRecord) -> bool:
        """Format outside any lock; write this line and any others waiting, or leave them."""
        # A thread that waited for the handler's lock gave up the GIL and queued for it again:
        # with four request threads, the form page cost twice its CPU. A thread that finds the
        # lock taken leaves its line to the holder, which looks for waiting lines each time it
        # lets go, so no line is left behind and none is written twice.
        if not self.filter(record):
            return False
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return False
        self.pending.append(line)
        self.write_waiting(wait=len(self.pending) > WAITING_LINES_HELD)
        return True

    def flush(self) -> None:
        """Flush the stream, then write any line that came while this held the lock."""
        super().flush()
        self.write_waiting()

    def release(self) -> None:
        """Let go of the lock, then write what came meanwhile (logging.shutdown holds it too)."""
        super().release()
        self.write_waiting()

    def write_waiting(self, wait: bool = False) -> None:
        """Write every waiting line in one go, unless another thread holds the lock (or wait)."""
        pending, lock = self.pending, self.lock
        while pending and lock.acquire(blocking=wait):  # type: ignore[union-attr]
            wait = False
            try:
                lines = []
                while pending:
                    lines.append(pending.popleft())
                if not lines:
                    continue  # the thread waited for wrote them all
                try:
                    stream = self.stream
                    stream.write("".join(lines))  # type: ignore[attr-defined]
                    stream.flush()  # type: ignore[attr-defined]
                except (KeyboardInterrupt, SystemExit):
                    pending.extendleft(reversed(lines))  # other threads' lines, kept for later
                    raise
            except Exception:
                # Lines lost to a broken stream; logging's own handler reports it, as for one.
                self.handleError(logging.makeLogRecord({"msg": "a log stream failed"}))
            finally:
                lock.release()  # type: ignore[union-attr]

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """Report a line that failed as logging does, but by frames only, without its arguments."""
        # logging's own report prints the error's message, every error chained to it, and the
        # record's arguments: any of them may quote personal data.
        error = sys.exc_info()[1]
        if not logging.raiseExceptions or sys.stderr is None or error is None:
            return
        try:
            sys.stderr.write(f"--- Logging error ---\n{frames(error)}")
        except Exception:
            pass  # stderr is the broken stream: nowhere is left to say so


class JSONFormatter(logging.Formatter):
    """A record as one line of JSON: time, level, logger, message, request id and extras."""

    # One encoder for every line: json.dumps with `default=` builds a new one per call.
    encode = json.JSONEncoder(ensure_ascii=False, default=str).encode

    def __init__(self) -> None:
        super().__init__()
        # One attribute, so that a thread never reads one second's date with another's number.
        self.last_second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record; a traceback keeps its frames but not the error's message."""
        entry: dict[str, object] = {
            "time": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            entry["request_id"] = request_id
        fields = record.__dict__
        for name in EXTRA_FIELDS:
            if name in fields:
                entry[name] = fields[name]
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = frames(record.exc_info[1])
        return self.encode(entry)

    def timestamp(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond, as datetime writes it, the date part reused."""
        # A flood writes thousands of lines a second; building a datetime for each was a tenth
        # of the formatting.
        second = int(created)
        micro = round((created - second) * 1e6)  # rounded as datetime rounds it
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        cached_second, text = self.last_second
        if second != cached_second:
            text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6]
            self.last_second = (second, text)
        return f"{text}.{micro // 1000:03d}+00:00"


class TextFormatter(logging.Formatter):
    """The same, for people at a terminal; tracebacks also without the error's message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatException(self, ei: object) -> str:  # noqa: N802 (logging's name)
        """Frames only: an exception's message may quote personal data."""
        return frames(ei[1]) if isinstance(ei, tuple) and ei[1] is not None else ""


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return g.get("request_id") if has_request_context() else None


def configure_logging(app: Flask) -> None:
    """Send the service's logs to LOG_STREAM in LOG_FORMAT at LOG_LEVEL, once per process."""
    root = logging.getLogger("service")
    root.setLevel(app.config["LOG_LEVEL"].upper())
    formatter = TextFormatter() if app.config["LOG_FORMAT"] == "text" else JSONFormatter()
    handler = next((h for h in root.handlers if isinstance(h, _StreamHandler)), None)
    if handler is None:
        handler = _StreamHandler(app.config["LOG_STREAM"])
        root.addHandler(handler)
    handler.name_of_stream = app.config["LOG_STREAM"]
    handler.setFormatter(formatter)
    app.before_request(start_request)
    app.after_request(log_request)


def start_request() -> None:
    """Take the caller's X-Request-ID if it is a plain token, else make one; start the clock."""
    given = request_ctx.request.headers.get("X-Request-ID", "")
    # An id names a request in the logs; it guards nothing, so it need not cost a system call.
    request_id = given if REQUEST_ID.fullmatch(given) else f"{random.getrandbits(128):032x}"
    state = vars(g)
    state["request_id"] = request_id
    state["started"] = time.perf_counter()


def log_request(response: Response) -> Response:
    """One line per request: route, status, latency and outcome; return the request id."""
    # The request and g are read once each: every read through Flask's proxies costs about as
    # much as writing a field of the line, and the line has eight.
    served = request_ctx.request
    state = vars(g)
    request_id = state.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    level = state.get("level", logging.INFO)
    if not _requests.isEnabledFor(level):
        return response
    started = state.get("started")
    latency = round((time.perf_counter() - started) * 1000, 2) if started else None
    method, path, status = served.method, served.path, response.status_code
    extra = {
        "request_id": request_id,
        "route": served.endpoint,
        "method": method,
        "path": path,
        "status": status,
        "latency_ms": latency,
        "outcome": state.get("outcome"),
    }
    if "reason" in state:
        extra["reason"] = state["reason"]
    # Made and handled here, as Logger.info would, less its search of the stack for the caller,
    # which no format of ours prints.
    record = _requests.makeRecord(
        _requests.name,
        level,
        __file__,
        0,
        "%s %s %s",
        (method, path, status),
        None,
        extra=extra,
    )
    _requests.handle(record)
    return response


def refused_because(logger: logging.Logger, reason: str, level: int = logging.INFO) -> None:
    """Say why a request was refused: in the request's own line (at `level` or above), else in
    a line of its own."""
    # Under a flood of junk, a second line per refused request cost a tenth of its time.
    if has_request_context():
        state = vars(g)
        state["reason"] = reason
        if level > state.get("level", logging.INFO):
            state["level"] = level
    else:
        logger.log(level, reason)


def frames(error: BaseException) -> str:
    """Where an error happened, without its message (which may quote personal data)."""
    return f"{type(error).__name__}\n" + "".join(traceback.format_tb(error.__traceback__))
