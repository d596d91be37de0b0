"""Benchmark this service against bare Flask, a tutorial Flask form and django-contact-form.

Run it through `bench/run`, which installs wrk and bench/.venv first; README.md beside this file
says what it measures and how. Everything listens on 127.0.0.1 and is stopped at the end, on
error and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import functools
import http.client
import json
import math
import multiprocessing
import os
import platform
import re
import secrets
import shutil
import signal
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

BENCH = Path(__file__).resolve().parent
SERVICE_ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent


def seal_keys() -> dict[str, str]:
    """A key pair as `flask --app wsgi keys generate` prints it (raw X25519, base64url)."""
    private = X25519PrivateKey.generate()

    def text(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return {
        "SEAL_PUBLIC_KEY": text(private.public_key().public_bytes_raw()),
        "SEAL_PRIVATE_KEY": text(private.private_bytes_raw()),
    }


LUA = BENCH / "wrk" / "replay.lua"
HOST = "127.0.0.1"

FIXED_RATE = (
    "not available in Debian's wrk: wrk 4.1 keeps a fixed number of connections busy "
    "(closed loop) and has no request-rate option; Debian has no wrk2"
)
INBOX = "front-desk@clinic.example"
SENDER = "Contact form <forms@clinic.example>"
ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
VALID = {
    "name": "Jane Citizen",
    "email": "jane.citizen@example.com",
    "phone": "0412 345 678",
    "message": "My lower back has been sore since Tuesday.\nCan I book for Friday?",
}
INVALID = {"name": "Jane Citizen", "email": "jane.citizen@", "phone": "12", "message": "Hello"}
# A limit no benchmark reaches, for the instance that measures everything but the rate limit.
NO_LIMIT = "1000000 per minute"
ALTCHA_EXPIRES_SECONDS = 600  # the service's default lifetime of a challenge
# Forms are posted no sooner than this after they were shown: FORM_MIN_FILL_SECONDS (3) and more.
FILL_SECONDS = 3.5
# How often wrk's connections are counted by gunicorn worker until all are open, and how often
# a repetition whose connections all went to one worker (or whose paired `hello` run's did) is
# run again: the benchmark compares two workers with two workers, for every system alike.
SPLIT_EVERY_SECONDS = 0.25
ATTEMPTS_PER_REPETITION = 3

SYSTEMS = {
    "hello": "(a) bare Flask `hello`",
    "tutorial": "(b) tutorial Flask-WTF + Flask-Mail",
    "django": "(c) django-contact-form",
    "service": "(d) this service",
    "durable": "(e) the durable floor: bare Flask storing each JSON post (SQLite, FULL sync)",
}
SCENARIOS = {
    "hello": "bare `hello` (GET /)",
    "page": "form page (GET)",
    "valid_html": "valid submission, HTML form",
    "valid_json": "valid submission, JSON API",
    "invalid": "invalid submission, HTML form with errors (422)",
    "captcha": "HTML form, forged captcha (422)",
    "rate_limited": "HTML form, rate-limited (429, the form again)",
    "json_no_captcha": "refused: JSON, no captcha answer (422)",
    "json_forged": "refused: JSON, forged captcha (422)",
    "json_spent": "refused: JSON, spent captcha (422)",
    "json_foreign": "refused: JSON, foreign Origin (403)",
    "json_too_large": "refused: JSON, body over the limit (413)",
    "json_rate_limited": "refused: JSON, rate-limited (429)",
}
# The refusals that must cost almost nothing: ratio to hello >= 0.5.
REFUSALS = (
    "json_no_captcha",
    "json_forged",
    "json_spent",
    "json_foreign",
    "json_too_large",
    "json_rate_limited",
)
# Patients through a flood: one valid enquiry every FLOOD_EVERY seconds for FLOOD_SECONDS,
# each from its own loopback address, while wrk floods from 127.0.0.1.
FLOOD_EVERY = 0.2
FLOOD_SECONDS = 10


# ---------------------------------------------------------------------------------------------
# Settings and progress


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line; the defaults are the issue's full run."""
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each run (3)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, each system (2)")
    parser.add_argument(
        "--threads", type=int, default=4, help="gunicorn gthread threads per worker (4)"
    )
    parser.add_argument(
        "--valid-requests",
        type=int,
        default=5000,
        help="valid submissions to the service per run: each needs a freshly solved captcha (5000)",
    )
    parser.add_argument("--backlog", type=int, default=5000, help="enquiries to deliver (5000)")
    parser.add_argument(
        "--solvers", type=int, default=os.cpu_count() or 2, help="processes solving captchas"
    )
    parser.add_argument(
        "--forged-captcha",
        choices=("wrong-solution", "bad-signature"),
        default="wrong-solution",
        help="the captcha-rejected post: a real challenge with a wrong answer (the service\n"
        "re-derives the key to refuse it), or a challenge whose signature is forged",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of: " + ", ".join(SYSTEMS),
    )
    parser.add_argument("--no-delivery", action="store_true", help="skip the delivery run")
    parser.add_argument(
        "--output", type=Path, default=BENCH / "results" / "latest.json", help="raw numbers"
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep databases and logs")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the service as it was at git revision REV (checked out into a\n"
        "temporary worktree), as system (f), in the same run: a before and after",
    )
    args = parser.parse_args(argv)
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    if args.baseline:
        SYSTEMS["baseline"] = f"(f) this service at {args.baseline}"
        args.systems.append("baseline")
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if args.connections < args.wrk_threads:
        parser.error("--connections must be at least --wrk-threads")
    if args.valid_requests < args.connections:
        parser.error("--valid-requests must be at least --connections")
    return args


STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, with the minutes and seconds since the start."""
    elapsed = int(time.monotonic() - STARTED)
    print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """The harness itself could not go on (a server did not start, wrk failed...)."""


# ---------------------------------------------------------------------------------------------
# Processes: every one we start is in its own session and stopped by its id at the end


class Processes:
    """Start processes in their own sessions and stop every one of them at the end."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process in a new session (so Ctrl-C reaches only us, and we stop it)."""
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 20.0) -> None:
        """SIGTERM the process's group, then SIGKILL it if it has not ended in time."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # The group may outlive its leader (a gunicorn worker): end what is left of it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        """Stop everything still running, newest first."""
        for proc in reversed(list(self.running)):
            self.stop(proc)


PROCESSES = Processes()


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (/proc/stat's first line), or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            return [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of CPU time stolen by the hypervisor between two cpu_times() readings."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    spent = [later - earlier for earlier, later in zip(before[:8], after[:8], strict=True)]
    total = sum(spent)  # user nice system idle iowait irq softirq steal (guest is in user)
    return 100.0 * spent[7] / total if total > 0 else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name, in parentheses, may contain spaces: split after its last ')'.
    return stat.rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (gunicorn's workers, for its master)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := proc_stat(entry)) is not None and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far, in seconds (gone ones: 0)."""
    ticks = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime and stime
    return ticks / os.sysconf("SC_CLK_TCK")


def connections_by_worker(port: int, workers: list[int]) -> list[int]:
    """How many established TCP connections to `port` each worker holds, in the workers' order."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                # local address HEX:PORT, state 01 is ESTABLISHED, the inode is field 9.
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    established.add(fields[9])
    counts = []
    for pid in workers:
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    held += target.startswith("socket:[") and target[8:-1] in established
        counts.append(held)
    return counts


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (VmRSS), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------
# HTTP from Python, for preparing the runs (never timed)


class Client:
    """A keep-alive HTTP/1.1 client for one server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Send a request; return status, headers and body. One retry on a closed connection."""
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, response.headers, data
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def raw_request(
    method: str, path: str, port: int, headers: list[tuple[str, str]], body: bytes = b""
) -> bytes:
    """A complete HTTP/1.1 request, exactly as wrk will send it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
    if b"\0" in request:
        raise BenchError("a request contains a NUL byte, which the wrk script uses as separator")
    return request


def send_raw(port: int, request: bytes, timeout: float = 30.0, source: str | None = None) -> int:
    """Send one prepared request on a new connection (from `source`); return its status."""
    address = (source, 0) if source else None
    with socket.create_connection((HOST, port), timeout=timeout, source_address=address) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        remaining = int(length.group(1)) - len(body) if length else 0
        while remaining > 0:
            chunk = sock.recv(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        return status


def json_post(port: int, values: dict, origin: str | None = None) -> bytes:
    """A JSON post to the API, as a site's own script sends it."""
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
        ("Origin", origin or f"http://{HOST}:{port}"),
    ]
    return raw_request("POST", "/api/enquiries", port, headers, json.dumps(values).encode())


def form_post(path: str, port: int, fields: dict, cookie: str | None = None) -> bytes:
    """A browser's form post: urlencoded, with Origin and Accept as a browser sends them."""
    headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", f"http://{HOST}:{port}"),
        ("Accept", ACCEPT_HTML),
    ]
    if cookie:
        headers.append(("Cookie", cookie))
    return raw_request("POST", path, port, headers, urllib.parse.urlencode(fields).encode())


def page_get(path: str, port: int) -> bytes:
    """A browser's page request."""
    return raw_request("GET", path, port, [("Accept", ACCEPT_HTML)])


def hidden_value(page: bytes, name: str) -> str:
    """The value of the hidden input `name` in a page."""
    for tag in re.findall(rb"<input[^>]*>", page):
        if re.search(rb'name="' + name.encode() + rb'"', tag):
            value = re.search(rb'value="([^"]*)"', tag)
            if value:
                return value.group(1).decode()
    raise BenchError(f"the page has no hidden input {name!r}")


def cookie_pair(headers: http.client.HTTPMessage, name: str) -> str:
    """`name=value` from the Set-Cookie headers of a response."""
    for header in headers.get_all("Set-Cookie") or []:
        pair = header.split(";", 1)[0].strip()
        if pair.startswith(name + "="):
            return pair
    raise BenchError(f"the response sets no cookie {name!r}")


# ---------------------------------------------------------------------------------------------
# Captchas: real challenges from the service, solved in parallel before the timed run


def solve_one(challenge_json: str) -> str:
    """Solve one ALTCHA challenge as the widget would; return the payload it posts."""
    import altcha

    challenge = altcha.Challenge.from_dict(json.loads(challenge_json))
    solution = altcha.solve_challenge(challenge)
    if solution is None:
        raise BenchError("a captcha challenge could not be solved")
    return altcha.Payload(challenge, solution).to_base64()


def fetch_challenge(client: Client) -> str:
    """A fresh challenge from the service, as JSON text."""
    status, _, body = client.request("GET", "/altcha/challenge", headers={"Accept": "*/*"})
    if status != 200:
        raise BenchError(f"GET /altcha/challenge answered {status}")
    return body.decode()


def forged_captcha(client: Client, kind: str) -> str:
    """A payload a robot would send: a real challenge, unsolved or with a forged signature."""
    import altcha

    challenge = altcha.Challenge.from_dict(json.loads(fetch_challenge(client)))
    if kind == "bad-signature":
        challenge.signature = "0" * 64
    return altcha.Payload(challenge, altcha.Solution(0, "00" * 32)).to_base64()


# ---------------------------------------------------------------------------------------------
# Loads and wrk


@dataclass
class Load:
    """What one wrk run sends, and what it should get back."""

    requests: list[bytes]
    mode: str  # "cycle" (round and round for the duration) or "once" (each request once)
    expected: set[int]
    mails: bool = False  # each expected answer means one email at the sink
    note: str = ""


@dataclass
class Run:
    """One wrk run's figures."""

    rps: float
    wrk_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    answers: int
    seconds: float
    statuses: dict[str, int]
    errors: dict[str, int]
    unexpected: int
    overflow: int
    sent: int
    mails_expected: int | None = None
    mails_seen: int | None = None
    # `hello`'s rate in a short run just before this one: the VM's speed moves by half within
    # minutes, so each figure is compared with `hello` measured next to it, not minutes before.
    hello_rps: float | None = None
    # The share of the machine's CPU time taken by the hypervisor for other guests during the
    # run (Linux's "steal"): on a shared VM, a run with a high figure was slowed from outside.
    steal_pct: float | None = None
    # The server's own CPU (gunicorn's master and workers) per answered request, in ms: what a
    # request costs, which moves less than the rate when the VM is slowed from outside.
    cpu_ms: float | None = None
    hello_cpu_ms: float | None = None
    # wrk's connections held by each gunicorn worker once all were open. gunicorn's workers race
    # to accept them, and now and then one takes all 16: that run measured one worker.
    connections_per_worker: list[int] | None = None

    @property
    def one_worker(self) -> bool:
        """True if the server had several workers and all of wrk's connections went to one."""
        split = self.connections_per_worker or []
        return len(split) > 1 and sum(split) > 0 and min(split) == 0


class Sink:
    """The aiosmtpd sink in its own process, and a client for its control port."""

    def __init__(self, tmp: Path) -> None:
        self.smtp_port = free_port()
        self.control_port = free_port()
        self.log = open(tmp / "sink.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = PROCESSES.start(
            [sys.executable, str(BENCH / "sink.py"), str(self.smtp_port), str(self.control_port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("the SMTP sink did not start; see sink.log") from None
                time.sleep(0.1)

    def _ask(self, command: str) -> dict:
        with socket.create_connection((HOST, self.control_port), timeout=10) as sock:
            sock.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def stats(self) -> dict:
        """{"count", "first", "last"} since the last reset."""
        return self._ask("STATS")

    def count(self) -> int:
        """Messages received since the last reset."""
        return self.stats()["count"]

    def reset(self) -> None:
        """Count from zero."""
        self._ask("RESET")

    def wait_for(self, target: int, timeout: float) -> int:
        """Wait until the sink has `target` messages (or the timeout); return the count."""
        deadline = time.monotonic() + timeout
        count = self.count()
        while count < target and time.monotonic() < deadline:
            time.sleep(0.1)
            count = self.count()
        return count

    def stop(self) -> None:
        """Stop the sink."""
        PROCESSES.stop(self.proc)
        self.log.close()

    def ceiling(self, count: int, per_connection: int, clients: int = 1) -> dict:
        """The most emails a second this sink takes: bare clients sending one prebuilt email."""
        # No service code at all: smtplib, and the same email again and again, over connections
        # of `per_connection` emails as the worker's batches use them. Whatever the worker does,
        # it cannot deliver faster than this over as many connections.
        email = ceiling_email()

        errors: list[BaseException] = []

        def send(emails: int) -> None:
            client: smtplib.SMTP | None = None
            try:
                for number in range(emails):
                    if number % per_connection == 0:
                        if client is not None:
                            client.quit()
                        client = smtplib.SMTP(
                            HOST, self.smtp_port, local_hostname="bench", timeout=30
                        )
                    assert client is not None
                    client.sendmail(SENDER, [INBOX], email)
                if client is not None:
                    client.quit()
            except BaseException as error:  # raised below: a ceiling with a failed client is none
                errors.append(error)

        each = max(1, count // clients)
        threads = [threading.Thread(target=send, args=(each,)) for _ in range(clients)]
        started = time.perf_counter()
        cpu = time.process_time()
        sink_cpu = cpu_seconds([self.proc.pid])
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise BenchError(f"the sink's ceiling: a client failed: {errors[0]!r}")
        seconds = time.perf_counter() - started
        sent = each * clients
        return {
            "emails": sent,
            "email_bytes": len(email),
            "per_connection": per_connection,
            "clients": clients,
            "rate": sent / seconds,
            "client_cpu_ms_per_email": (time.process_time() - cpu) / sent * 1000,
            "sink_cpu_ms_per_email": (cpu_seconds([self.proc.pid]) - sink_cpu) / sent * 1000,
            "note": "bare smtplib clients sending one prebuilt email: what the sink takes at most",
        }


# The sink's ceilings each delivery run records, and how the report names them.
SINK_CEILINGS = (
    ("sink_ceiling", "a bare smtplib client"),
    ("sink_ceiling_two_clients", "two bare smtplib clients at once"),
)


def ceiling_email() -> bytes:
    """An email of the size and shape of the clinic's: text and HTML, quoted-printable."""
    line = "of an enquiry about a sore lower back, as a patient writes it."
    text = "\r\n".join(f"Line {n} {line}" for n in range(12))
    html = "<p>" + "</p>\r\n<p>".join(text.split("\r\n")) + "</p>"
    return (
        f"From: {SENDER}\r\nTo: {INBOX}\r\nReply-To: jane.citizen@example.com\r\n"
        "Subject: Enquiry from Jane Citizen\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="==b=="\r\n\r\n'
        '--==b==\r\nContent-Type: text/plain; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{text}\r\n"
        '--==b==\r\nContent-Type: text/html; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{html}\r\n--==b==--\r\n"
    ).encode()


@dataclass
class Server:
    """One system under gunicorn."""

    name: str
    port: int
    proc: subprocess.Popen
    log: Path

    def workers(self) -> list[int]:
        """gunicorn's worker processes."""
        return children(self.proc.pid)

    def rss(self) -> list[float]:
        """Resident set size of each worker, in MB."""
        return [mb for mb in (rss_mb(pid) for pid in self.workers()) if mb is not None]

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Bench:
    """One benchmark: the sink, each system in turn, the delivery run, and the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: dict[str, dict[str, dict]] = {name: {} for name in SCENARIOS}
        self.memory: dict[str, dict] = {}
        self.deliveries: dict[str, dict] = {}
        self.flood: dict[str, dict] = {}
        self.problems: list[str] = []
        # Repetitions run again because one worker held every connection (see measure()).
        self.run_again: list[str] = []
        self.timings: dict[str, float] = {}
        (BENCH / "results").mkdir(exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="run-", dir=BENCH / "results"))
        self.sink: Sink | None = None
        self.wrk_runs = 0
        # `hello` keeps running after its own runs, for the short runs paired with every other.
        self.servers = contextlib.ExitStack()
        self.hello: Server | None = None
        self.baseline_root: Path | None = None
        if args.baseline:
            self.baseline_root = self.tmp / "baseline-tree"
            subprocess.run(
                ["git", "-C", str(SERVICE_ROOT), "worktree", "add", "--detach", "--quiet"]
                + [str(self.baseline_root), args.baseline],
                check=True,
            )

    # -- servers -------------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """A clean environment: nothing of the caller's shell leaks into a system's settings."""
        return {
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            # Temporary files (the service's metrics folder) go with the run's folder.
            "TMPDIR": str(self.tmp),
        }

    def mail_env(self) -> dict[str, str]:
        """The same mail settings for every system: the sink."""
        assert self.sink is not None
        return {
            "SECRET_KEY": secrets.token_hex(32),
            "CLINIC_INBOX": INBOX,
            "MAIL_SERVER": HOST,
            "MAIL_PORT": str(self.sink.smtp_port),
            "MAIL_DEFAULT_SENDER": SENDER,
        }

    def service_env(self, name: str, limits: bool = True) -> dict[str, str]:
        """The service in its default configuration, set only by environment variables."""
        folder = self.tmp / name
        folder.mkdir()
        env = self.base_env() | self.mail_env()
        env |= {
            "SERVICE_ENV": "production",
            "DATABASE_URL": f"sqlite:///{folder / 'enquiries.sqlite3'}",
            "AUTO_MIGRATE": "true",
            # Production seals every enquiry at rest; one process holds both keys.
            **seal_keys(),
            # The benchmark solves its captchas in advance from one address.
            "RATELIMIT_CHALLENGE": NO_LIMIT,
            # 16 attempts per challenge instead of 4,096, at the default ALTCHA_COST: the
            # service's check of an answer is one attempt whatever the difficulty (a test holds
            # it), so only the solving before each run gets faster.
            "ALTCHA_DIFFICULTY": "1",
        }
        if not limits:
            env |= {"RATELIMIT_PER_CLIENT": NO_LIMIT, "RATELIMIT_GLOBAL": NO_LIMIT}
        return env

    def migrate(self, root: Path, env: dict[str, str]) -> None:
        """Create the store's tables before gunicorn starts, as a deployment does."""
        # Workers that find the store at its schema's head never load Alembic (nor its memory).
        argv = [str(VENV_BIN / "flask"), "--app", "wsgi", "db", "upgrade"]
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"flask db upgrade failed:\n{done.stdout}\n{done.stderr}")

    def gunicorn_flags(self, port: int) -> list[str]:
        """The same gunicorn settings for every system."""
        return [
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(self.args.workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(self.args.threads),
            "--timeout",
            "30",
            "--graceful-timeout",
            "40",
            "--keep-alive",
            "5",
            # Every system logs its access lines, as the service's gunicorn.conf.py does.
            "--access-logfile",
            "-",
            # The default control socket is one path per user: it would clash with any other
            # gunicorn on the machine.
            "--no-control-socket",
        ]

    @contextlib.contextmanager
    def server(
        self, name: str, app: str, cwd: Path, env: dict[str, str], ready: str
    ) -> Iterator[Server]:
        """Run `gunicorn app` from `cwd` until the block ends; wait until every worker answers."""
        if "DATABASE_URL" in env:
            self.migrate(cwd, env)
        port = free_port()
        log = self.tmp / f"{name}.log"
        argv = [str(VENV_BIN / "gunicorn"), *self.gunicorn_flags(port), app]
        with open(log, "w") as handle:
            proc = PROCESSES.start(argv, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        server = Server(name, port, proc, log)
        try:
            self.wait_ready(server, ready)
            yield server
        finally:
            PROCESSES.stop(proc)

    def wait_ready(self, server: Server, path: str) -> None:
        """Wait until the master has all its workers and the page answers 200."""
        deadline = time.monotonic() + 90
        client = Client(server.port)
        while True:
            if server.proc.poll() is not None:
                raise BenchError(f"{server.name} exited at start-up:\n{server.log_tail()}")
            try:
                status, _, _ = client.request("GET", path, headers={"Accept": ACCEPT_HTML})
            except OSError:
                status = 0
            if status == 200 and len(server.workers()) >= self.args.workers:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{server.name} did not answer {path}:\n{server.log_tail()}")
            time.sleep(0.2)
        client.close()
        # Every worker imports and builds its app at boot; let the last one finish doing so.
        time.sleep(1.0)

    # -- wrk -----------------------------------------------------------------------------------

    def run_wrk(self, server: Server, load: Load, duration: int) -> Run:
        """One wrk run of `load` against `server`."""
        args = self.args
        self.wrk_runs += 1
        folder = self.tmp / f"wrk-{self.wrk_runs}"
        folder.mkdir()
        threads = args.wrk_threads
        if load.mode == "once":
            chunks = [load.requests[i::threads] for i in range(threads)]
        elif len(load.requests) >= threads:
            chunks = [load.requests[i::threads] for i in range(threads)]
        else:
            chunks = [load.requests] * threads
        for number, chunk in enumerate(chunks, start=1):
            (folder / f"{number}.req").write_bytes(b"\0".join(chunk))
        # A run that sends each request once ends by itself; -d is only its upper bound.
        seconds = max(300, 20 * duration) if load.mode == "once" else duration
        argv = [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(args.connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(LUA),
            f"http://{HOST}:{server.port}/",
            "--",
            str(folder),
            load.mode,
            str(threads),
        ]
        before = cpu_times()
        server_pids = [server.proc.pid, *server.workers()]
        server_cpu = cpu_seconds(server_pids)
        proc = PROCESSES.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        split: list[int] = []

        def count_connections() -> None:
            # Until every connection is open (wrk reads its requests first), or the run is over.
            while True:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(SPLIT_EVERY_SECONDS)
                    return
                counts = connections_by_worker(server.port, server_pids[1:])
                if sum(counts) > sum(split):
                    split[:] = counts
                if sum(split) >= args.connections:
                    return

        counter = threading.Thread(target=count_connections)
        counter.start()
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        finally:
            PROCESSES.stop(proc)
            counter.join()
        steal = steal_percent(before, cpu_times())
        server_cpu = cpu_seconds(server_pids) - server_cpu
        line = next((x for x in out.splitlines() if x.startswith("BENCH-JSON ")), None)
        if proc.returncode != 0 or line is None:
            raise BenchError(f"wrk failed ({proc.returncode}):\n{out}\n{err}")
        data = json.loads(line.removeprefix("BENCH-JSON "))
        if not self.args.keep_temp:
            shutil.rmtree(folder, ignore_errors=True)
        elapsed = data["last"] - data["first"]
        answers = data["answers"]
        statuses = {str(k): v for k, v in sorted(data["statuses"].items())}
        unexpected = sum(v for k, v in statuses.items() if int(k) not in load.expected)
        latency = data["latency_us"]
        return Run(
            rps=answers / elapsed if elapsed > 0 else 0.0,
            wrk_rps=data["requests"] / (data["duration_us"] / 1e6),
            p50_ms=latency["p50"] / 1000,
            p90_ms=latency["p90"] / 1000,
            p99_ms=latency["p99"] / 1000,
            mean_ms=latency["mean"] / 1000,
            max_ms=latency["max"] / 1000,
            answers=answers,
            seconds=elapsed,
            statuses=statuses,
            errors=data["errors"],
            unexpected=unexpected,
            overflow=data["overflow"],
            sent=data["sent"],
            steal_pct=steal,
            cpu_ms=1000 * server_cpu / answers if answers else None,
            connections_per_worker=split or None,
        )

    def warm(self, server: Server, path: str) -> None:
        """Warm a server up with its page for --warmup seconds; the figures are discarded."""
        if self.args.warmup > 0:
            self.run_wrk(
                server, Load([page_get(path, server.port)], "cycle", {200}), self.args.warmup
            )

    def measure(
        self,
        scenario: str,
        system: str,
        server: Server,
        make_load: Callable[[int], Load],
        smoke: Callable[[Load], None] | None = None,
    ) -> None:
        """Run a scenario --reps times against a server and keep every run and the medians."""
        runs: list[Run] = []
        for rep in range(self.args.reps):
            for attempt in range(1, ATTEMPTS_PER_REPETITION + 1):
                load, run, hello = self.repetition(scenario, system, server, make_load, smoke, rep)
                lopsided = [r for r in (run, hello) if r is not None and r.one_worker]
                if not lopsided or attempt == ATTEMPTS_PER_REPETITION:
                    break
                splits = " and ".join(str(r.connections_per_worker) for r in lopsided)
                self.run_again.append(f"{system} / {scenario} rep {rep + 1}: {splits}")
                say(
                    f"  {system:8} {scenario:12} rep {rep + 1}: one worker held every "
                    f"connection ({splits}); run again"
                )
            runs.append(run)
        self.keep(scenario, system, load, runs)

    def repetition(
        self,
        scenario: str,
        system: str,
        server: Server,
        make_load: Callable[[int], Load],
        smoke: Callable[[Load], None] | None,
        rep: int,
    ) -> tuple[Load, Run, Run | None]:
        """One repetition: its load, the `hello` run paired with it, and the load's run."""
        load = make_load(rep)
        if smoke is not None:
            smoke(load)
        elif load.mode == "cycle":
            status = send_raw(server.port, load.requests[0])
            if status not in load.expected:
                self.problems.append(
                    f"{system} / {scenario}: the first request answered {status}, "
                    f"expected {sorted(load.expected)}:\n{server.log_tail(10)}"
                )
        hello = self.paired_hello() if system != "hello" else None
        hello_rps = hello.rps if hello is not None else None
        before = self.sink.count() if load.mails and self.sink else 0
        run = self.run_wrk(server, load, self.args.duration)
        run.hello_rps = hello_rps
        run.hello_cpu_ms = hello.cpu_ms if hello is not None else None
        if load.mails and self.sink:
            accepted = sum(v for k, v in run.statuses.items() if int(k) in load.expected)
            run.mails_expected = accepted
            # The service delivers after answering: give its worker time to empty the outbox.
            run.mails_seen = self.sink.wait_for(before + accepted, 60 + accepted / 50) - before
            # Requests still in flight when wrk stopped were sent too, but never counted.
            time.sleep(0.5)
            run.mails_seen = self.sink.count() - before
            if not accepted <= run.mails_seen <= accepted + (run.sent - run.answers):
                self.problems.append(
                    f"{system} / {scenario}: {accepted} accepted "
                    f"({run.sent - run.answers} unanswered when wrk stopped), "
                    f"{run.mails_seen} emails reached the sink"
                )
        if run.unexpected:
            self.problems.append(
                f"{system} / {scenario}: {run.unexpected} of {run.answers} answers had an "
                f"unexpected status {run.statuses} (expected {sorted(load.expected)})"
            )
        say(
            f"  {system:8} {scenario:12} rep {rep + 1}: {run.rps:8.1f} req/s  "
            f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  {run.statuses}"
            + (f"  steal {run.steal_pct:.0f}%" if run.steal_pct is not None else "")
            + (f"  (hello just before: {hello_rps:.0f})" if hello_rps is not None else "")
            + (f"  server CPU {run.cpu_ms:.2f} ms/req" if run.cpu_ms is not None else "")
            + (f" (hello {run.hello_cpu_ms:.2f})" if run.hello_cpu_ms is not None else "")
            + f"  connections by worker {run.connections_per_worker}"
        )
        return load, run, hello

    def keep(self, scenario: str, system: str, load: Load, runs: list[Run]) -> None:
        """Keep a scenario's runs and their medians."""
        self.results[scenario][system] = {
            "label": SCENARIOS[scenario],
            "note": load.note,
            "mode": load.mode,
            "expected_status": sorted(load.expected),
            "runs": [run.__dict__ for run in runs],
            "median": {
                "rps": statistics.median(r.rps for r in runs),
                "p50_ms": statistics.median(r.p50_ms for r in runs),
                "p99_ms": statistics.median(r.p99_ms for r in runs),
            },
            "unexpected": sum(r.unexpected for r in runs),
            "answers": sum(r.answers for r in runs),
        }
        median = self.results[scenario][system]["median"]
        paired = [r.hello_rps for r in runs if r.hello_rps is not None]
        if paired:
            median["paired_hello_rps"] = statistics.median(paired)
        costs = [r.cpu_ms for r in runs if r.cpu_ms is not None]
        if costs:
            median["cpu_ms"] = statistics.median(costs)
        hello_costs = [r.hello_cpu_ms for r in runs if r.hello_cpu_ms is not None]
        if hello_costs:
            median["paired_hello_cpu_ms"] = statistics.median(hello_costs)

    def record_memory(self, system: str, server: Server) -> None:
        """RSS of each gunicorn worker after the runs."""
        sizes = server.rss()
        self.memory[system] = {"workers_rss_mb": sizes, "max_mb": max(sizes) if sizes else None}
        say(f"  {system:8} RSS per worker: {', '.join(f'{mb:.1f} MB' for mb in sizes)}")

    # -- the four systems ------------------------------------------------------------------------

    def bench_hello(self) -> None:
        """(a) The ceiling: bare Flask answering hello."""
        env = self.base_env()
        hello = BENCH / "peers" / "hello"
        server = self.servers.enter_context(self.server("hello", "app:app", hello, env, "/"))
        self.warm(server, "/")
        load = Load([page_get("/", server.port)], "cycle", {200})
        self.measure("hello", "hello", server, lambda rep: load)
        self.record_memory("hello", server)
        self.hello = server

    def paired_hello(self) -> Run | None:
        """`hello` now, in a run of half the duration (None if `hello` is not measured)."""
        if self.hello is None:
            return None
        load = Load([page_get("/", self.hello.port)], "cycle", {200})
        return self.run_wrk(self.hello, load, max(3, self.args.duration // 2))

    def bench_tutorial(self) -> None:
        """(b) Flask-WTF + Flask-Mail, sending inline."""
        env = self.base_env() | self.mail_env()
        folder = BENCH / "peers" / "tutorial"
        with self.server("tutorial", "app:app", folder, env, "/contact") as server:
            port = server.port
            sessions = [self.flask_wtf_session(port) for _ in range(self.args.connections)]
            self.warm(server, "/contact")
            page = Load([page_get("/contact", port)], "cycle", {200})
            self.measure("page", "tutorial", server, lambda rep: page)

            def valid(rep: int) -> Load:
                requests = []
                for number in range(1000):
                    cookie, token = sessions[number % len(sessions)]
                    fields = VALID | {"message": f"{VALID['message']} ({rep}-{number})"}
                    requests.append(
                        form_post("/contact", port, fields | {"csrf_token": token}, cookie)
                    )
                return Load(requests, "cycle", {302}, mails=True)

            self.measure("valid_html", "tutorial", server, valid)
            invalid = Load(
                [
                    form_post("/contact", port, INVALID | {"csrf_token": token}, cookie)
                    for cookie, token in sessions
                ],
                "cycle",
                {200},
                note="the form again, with its errors, status 200",
            )
            self.measure("invalid", "tutorial", server, lambda rep: invalid)
            self.record_memory("tutorial", server)

    def flask_wtf_session(self, port: int) -> tuple[str, str]:
        """A visitor's session cookie and the CSRF token of the form it was shown."""
        status, headers, body = Client(port).request("GET", "/contact")
        if status != 200:
            raise BenchError(f"tutorial: GET /contact answered {status}")
        return cookie_pair(headers, "session"), hidden_value(body, "csrf_token")

    def bench_django(self) -> None:
        """(c) django-contact-form with Django's SMTP backend."""
        env = self.base_env() | self.mail_env() | {"DJANGO_SETTINGS_MODULE": "settings"}
        folder = BENCH / "peers" / "django_site"
        with self.server("django", "wsgi:application", folder, env, "/contact/") as server:
            port = server.port
            visitors = [self.django_csrf(port) for _ in range(self.args.connections)]
            self.warm(server, "/contact/")
            page = Load([page_get("/contact/", port)], "cycle", {200})
            self.measure("page", "django", server, lambda rep: page)

            def fields_of(values: dict) -> dict:
                return {"name": values["name"], "email": values["email"], "body": values["message"]}

            def valid(rep: int) -> Load:
                requests = []
                for number in range(1000):
                    cookie, token = visitors[number % len(visitors)]
                    values = VALID | {"message": f"{VALID['message']} ({rep}-{number})"}
                    fields = fields_of(values) | {"csrfmiddlewaretoken": token}
                    requests.append(form_post("/contact/", port, fields, cookie))
                return Load(requests, "cycle", {302}, mails=True)

            self.measure("valid_html", "django", server, valid)
            invalid = Load(
                [
                    form_post(
                        "/contact/",
                        port,
                        fields_of(INVALID) | {"csrfmiddlewaretoken": token},
                        cookie,
                    )
                    for cookie, token in visitors
                ],
                "cycle",
                {200},
                note="the form again, with its errors, status 200",
            )
            self.measure("invalid", "django", server, lambda rep: invalid)
            self.record_memory("django", server)

    def django_csrf(self, port: int) -> tuple[str, str]:
        """A visitor's CSRF cookie and the token of the form it was shown."""
        status, headers, body = Client(port).request("GET", "/contact/")
        if status != 200:
            raise BenchError(f"django: GET /contact/ answered {status}")
        return cookie_pair(headers, "csrftoken"), hidden_value(body, "csrfmiddlewaretoken")

    def bench_durable(self) -> None:
        """(e) The floor: each JSON post stored with the service's durability, nothing else."""
        database = self.tmp / "durable.sqlite3"
        with sqlite3.connect(database) as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept by the file, as the service's is
            db.execute("CREATE TABLE enquiries (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        env = self.base_env() | {"DURABLE_DATABASE": str(database)}
        folder = BENCH / "peers" / "durable"
        with self.server("durable", "app:app", folder, env, "/") as server:
            port = server.port

            def valid(rep: int) -> Load:
                requests = [
                    json_post(port, VALID | {"message": f"{VALID['message']} ({rep}-{number})"})
                    for number in range(1000)
                ]
                return Load(requests, "cycle", {202}, note="stored, not checked; 202")

            self.measure("valid_json", "durable", server, valid)
            self.record_memory("durable", server)
        with sqlite3.connect(database) as db:
            stored = db.execute("SELECT count(*) FROM enquiries").fetchone()[0]
        runs = self.results["valid_json"]["durable"]["runs"]
        answered = sum(n for run in runs for code, n in run["statuses"].items() if int(code) == 202)
        if stored < answered:
            self.problems.append(f"durable: {answered} answered 202, only {stored} stored")

    def bench_baseline(self) -> None:
        """(f) This service at --baseline REV, measured exactly as (d)."""
        assert self.baseline_root is not None
        self.bench_service(self.baseline_root, "baseline")

    def bench_service(self, root: Path = SERVICE_ROOT, name: str = "service") -> None:
        """(d) This service: default configuration, SQLite, 2 workers."""
        env = self.service_env(name, limits=False)
        with self.server(name, "wsgi:app", root, env, "/contact") as server:
            port = server.port
            client = Client(port)
            # Tokens are fetched first, so that they are older than FORM_MIN_FILL_SECONDS (3 s).
            tokens = [self.form_token(client) for _ in range(self.args.connections)]
            shown_at = time.monotonic()
            self.warm(server, "/contact")
            page = Load([page_get("/contact", port)], "cycle", {200})
            self.measure("page", name, server, lambda rep: page)

            def valid_html(rep: int) -> Load:
                payloads = self.solve(client, self.args.valid_requests + 1, f"HTML run {rep + 1}")
                requests = []
                for number, payload in enumerate(payloads):
                    values = VALID | {"message": f"{VALID['message']} (html {rep}-{number})"}
                    fields = {"csrf_token": tokens[number % len(tokens)], "page": ""}
                    fields |= values | {"altcha": payload}
                    requests.append(form_post("/contact", port, fields))
                return Load(requests, "once", {303}, mails=True, note="303 to the thank-you page")

            def valid_json(rep: int) -> Load:
                payloads = self.solve(client, self.args.valid_requests + 1, f"JSON run {rep + 1}")
                requests = []
                for number, payload in enumerate(payloads):
                    values = VALID | {"message": f"{VALID['message']} (json {rep}-{number})"}
                    body = json.dumps(values | {"altcha": payload}).encode()
                    headers = [
                        ("Content-Type", "application/json"),
                        ("Accept", "application/json"),
                        ("Origin", f"http://{HOST}:{port}"),
                    ]
                    requests.append(raw_request("POST", "/api/enquiries", port, headers, body))
                return Load(requests, "once", {202}, mails=True, note="202 queued")

            def smoke_once(load: Load) -> None:
                # The last request has a solution of its own: send it now, so that a refusal is
                # seen before the run, and the run sends the rest, each once.
                last = load.requests.pop()
                before = self.sink.count() if self.sink else 0
                status = send_raw(port, last)
                if status not in load.expected:
                    raise BenchError(
                        f"service: a valid submission answered {status}, expected "
                        f"{sorted(load.expected)}:\n{server.log_tail(15)}"
                    )
                if self.sink:
                    self.sink.wait_for(before + 1, 30)

            time.sleep(max(0.0, shown_at + FILL_SECONDS - time.monotonic()))
            self.measure("valid_html", name, server, valid_html, smoke_once)
            self.measure("valid_json", name, server, valid_json, smoke_once)

            invalid_fields = INVALID | {"csrf_token": tokens[0], "page": "", "altcha": ""}
            invalid = Load(
                [form_post("/contact", port, invalid_fields)],
                "cycle",
                {422},
                note="the form again with its errors, 422; empty captcha",
            )
            self.measure("invalid", name, server, lambda rep: invalid)

            def captcha(rep: int) -> Load:
                forged = forged_captcha(client, self.args.forged_captcha)
                fields = VALID | {"csrf_token": tokens[0], "page": "", "altcha": forged}
                return Load(
                    [form_post("/contact", port, fields)],
                    "cycle",
                    {422},
                    note=f"valid fields, captcha: {self.args.forged_captcha}; 422",
                )

            self.measure("captcha", name, server, captcha)
            self.measure_json_refusals(name, server, client)
            client.close()
            self.record_memory(name, server)

        # The rate limit on its own instance, with the default limits (5/minute, 30/hour).
        env = self.service_env(f"{name}-limits", limits=True)
        with self.server(f"{name}-limits", "wsgi:app", root, env, "/contact") as server:
            port = server.port
            client = Client(port)
            token = self.form_token(client)
            client.close()
            time.sleep(FILL_SECONDS)
            fields = VALID | {"csrf_token": token, "page": "", "altcha": ""}
            flood = form_post("/contact", port, fields)
            # Spend every worker's per-client budget (each counts on its own with memory://).
            spend = 40 * self.args.workers * 2
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                spent = list(pool.map(lambda _: send_raw(port, flood), range(spend)))
            say(f"  service  rate limit spent by {spend} posts: {sorted(set(spent))}")
            self.warm(server, "/contact")
            load = Load([flood], "cycle", {429}, note="past the default per-client limit; 429")
            self.measure("rate_limited", name, server, lambda rep: load)
            junk = json_post(port, VALID)
            # Each minute lets the address's next 5 through the per-minute limit, to their 422.
            load = Load(
                [junk], "cycle", {422, 429}, note="no captcha, past the per-client limit; 429"
            )
            self.measure("json_rate_limited", name, server, lambda rep: load)
            self.record_memory(f"{name}-limits", server)

        # Patients through a flood, on a fresh instance with the default limits.
        env = self.service_env(f"{name}-flood", limits=True)
        with self.server(f"{name}-flood", "wsgi:app", root, env, "/contact") as server:
            self.flood[name] = self.patients_through_a_flood(server)

    def measure_json_refusals(self, name: str, server: Server, client: Client) -> None:
        """The JSON posts that must be refused for almost nothing (no limits on this instance)."""
        port = server.port
        refusals = {
            "json_no_captcha": (json_post(port, VALID), 422, "valid fields, no captcha answer"),
            "json_forged": (
                json_post(port, VALID | {"altcha": forged_captcha(client, "bad-signature")}),
                422,
                "valid fields, a challenge of the service with a forged signature",
            ),
            "json_foreign": (
                json_post(port, VALID, origin="https://robots.example"),
                403,
                "valid fields, Origin: https://robots.example",
            ),
            "json_too_large": (
                json_post(port, VALID | {"message": "x" * (80 * 1024)}),
                413,
                "an 80 KiB message, over MAX_CONTENT_LENGTH (64 KiB)",
            ),
        }
        [spent] = self.solve(client, 1, "spent-captcha run")
        first = send_raw(port, json_post(port, VALID | {"altcha": spent}))
        if first != 202:
            raise BenchError(f"service: the post that spends a captcha answered {first}")
        refusals["json_spent"] = (
            json_post(port, VALID | {"message": "again", "altcha": spent}),
            422,
            "valid fields, a solution that was used a moment ago",
        )
        for scenario in REFUSALS:
            if scenario not in refusals:
                continue
            request, status, note = refusals[scenario]
            load = Load([request], "cycle", {status}, note=note)
            self.measure(scenario, name, server, lambda rep, load=load: load)

    def patients_through_a_flood(self, server: Server) -> dict:
        """Valid enquiries from other addresses, one every 200 ms, while wrk floods junk."""
        port = server.port
        client = Client(port)
        count = int(FLOOD_SECONDS / FLOOD_EVERY)
        payloads = self.solve(client, count, "patients through a flood")
        client.close()
        # Each patient has an address of their own: the per-client limit is theirs, not the
        # robots'. Linux answers for all of 127.0.0.0/8 on the loopback device.
        patients = [
            (
                f"127.0.1.{number + 1}",
                json_post(
                    port, VALID | {"message": f"{VALID['message']} (patient {number})", "altcha": p}
                ),
            )
            for number, p in enumerate(payloads)
        ]
        junk = Load(
            [json_post(port, VALID)],
            "cycle",
            {422, 429},
            note="no captcha answer, then past the per-client limit",
        )
        before = self.sink.count() if self.sink else 0
        flood: dict[str, Any] = {}

        def robots() -> None:
            flood["junk"] = self.run_wrk(server, junk, FLOOD_SECONDS + 3).__dict__

        robot_thread = threading.Thread(target=robots)
        robot_thread.start()
        time.sleep(1.5)  # the flood is at full speed before the first patient
        latencies: list[float] = []
        statuses: list[int] = []
        started = time.monotonic()
        for number, (address, request) in enumerate(patients):
            time.sleep(max(0.0, started + number * FLOOD_EVERY - time.monotonic()))
            sent = time.perf_counter()
            statuses.append(send_raw(port, request, source=address))
            latencies.append((time.perf_counter() - sent) * 1000)
        robot_thread.join()
        accepted = statuses.count(202)
        delivered = self.sink.wait_for(before + accepted, 60) - before if self.sink else None
        ordered = sorted(latencies)
        result = {
            "patients": count,
            "accepted": accepted,
            "statuses": {str(k): statuses.count(k) for k in sorted(set(statuses))},
            "delivered": delivered,
            "p50_ms": statistics.median(ordered),
            "p99_ms": ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)],
            "max_ms": ordered[-1],
            "junk": flood.get("junk"),
        }
        junk_rps = result["junk"]["rps"] if result["junk"] else 0
        say(
            f"  service  flood: {accepted} of {count} patients got 202, {delivered} delivered; "
            f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max "
            f"{result['max_ms']:.1f} ms; junk {junk_rps:.0f} req/s "
            f"{result['junk']['statuses'] if result['junk'] else ''}"
        )
        if accepted != count or delivered != accepted:
            self.problems.append(
                f"flood: {accepted} of {count} patients accepted ({result['statuses']}), "
                f"{delivered} delivered"
            )
        return result

    def form_token(self, client: Client) -> str:
        """The signed token of a freshly shown form page."""
        status, _, body = client.request("GET", "/contact", headers={"Accept": ACCEPT_HTML})
        if status != 200:
            raise BenchError(f"service: GET /contact answered {status}")
        return hidden_value(body, "csrf_token")

    def solve(self, client: Client, count: int, what: str) -> list[str]:
        """Fetch `count` challenges and solve them in parallel; every solution is used once."""
        started = time.monotonic()
        challenges = [fetch_challenge(client) for _ in range(count)]
        context = multiprocessing.get_context("fork")
        # The solvers are forks of this process: without SIGTERM's default back they would run
        # main()'s handler. And they are closed and joined, not terminated, as the pool's `with`
        # would: a run hung for good once in terminate(), joining a solver that never exited.
        pool = context.Pool(
            self.args.solvers, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)
        )
        try:
            payloads = pool.map(solve_one, challenges, chunksize=4)
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
        took = time.monotonic() - started
        self.timings.setdefault("solve_seconds_each", took / count)
        say(f"  service  solved {count} captchas for the {what} in {took:.0f} s")
        if took > ALTCHA_EXPIRES_SECONDS - 60:
            raise BenchError(
                f"solving took {took:.0f} s: the first challenges would expire before the run. "
                "Use fewer --valid-requests or more --solvers."
            )
        return payloads

    # -- delivery ------------------------------------------------------------------------------

    def bench_delivery(
        self, root: Path = SERVICE_ROOT, name: str = "service", connections: int | None = None
    ) -> None:
        """Queue --backlog enquiries, then time `flask outbox work` handing them to the sink."""
        assert self.sink is not None
        backlog = self.args.backlog
        env = self.service_env(f"{name}-delivery") | {"DELIVERY_WORKER": "external"}
        if connections is not None:
            env["OUTBOX_CONNECTIONS"] = str(connections)
        fill = subprocess.run(
            [sys.executable, str(root / "bench" / "fill_outbox.py"), str(backlog)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if fill.returncode != 0:
            raise BenchError(f"filling the outbox failed:\n{fill.stdout}\n{fill.stderr}")
        filled = json.loads(fill.stdout.strip().splitlines()[-1])
        say(f"  service  queued {backlog} enquiries in {filled['seconds']:.1f} s")
        self.sink.reset()
        ceiling = self.sink.ceiling(min(backlog, 3000), per_connection=20)
        self.sink.reset()
        # Two clients at once: what the sink takes when its waits overlap, as two lanes' do.
        ceiling_two = self.sink.ceiling(min(backlog, 3000), per_connection=20, clients=2)
        say(
            f"  sink     takes at most {ceiling['rate']:.0f} emails/s from a bare client "
            f"(CPU per email: client {ceiling['client_cpu_ms_per_email']:.2f} ms, sink "
            f"{ceiling['sink_cpu_ms_per_email']:.2f} ms), {ceiling_two['rate']:.0f} from two "
            f"at once (sink {ceiling_two['sink_cpu_ms_per_email']:.2f} ms an email)"
        )
        self.sink.reset()
        log = self.tmp / "outbox-work.log"
        with open(log, "w") as handle:
            started = time.time()
            proc = PROCESSES.start(
                [str(VENV_BIN / "flask"), "--app", "wsgi", "outbox", "work"],
                cwd=root,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        # (emails at the sink, the worker's CPU seconds, the sink's) at the first email seen and
        # at the last: the CPU per email between them leaves out the worker's start-up.
        readings: list[tuple[int, float, float]] = []

        def reading(seen: int) -> tuple[int, float, float]:
            return seen, cpu_seconds([proc.pid]), cpu_seconds([sink_pid])

        sink_pid = self.sink.proc.pid
        try:
            deadline = time.monotonic() + max(120, backlog / 10)
            while (seen := self.sink.count()) < backlog:
                if seen and not readings:
                    readings.append(reading(seen))
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            # Only while it runs: once it has exited, /proc no longer has its counts.
            if readings and proc.poll() is None:
                readings.append(reading(self.sink.count()))
        finally:
            PROCESSES.stop(proc)
        worker_ms = sink_ms = None
        if len(readings) == 2 and readings[1][0] > readings[0][0]:
            (seen_first, worker_first, sink_first), (seen_last, worker_last, sink_last) = readings
            worker_ms = (worker_last - worker_first) / (seen_last - seen_first) * 1000
            sink_ms = (sink_last - sink_first) / (seen_last - seen_first) * 1000
        stats = self.sink.stats()
        count, first, last = stats["count"], stats["first"], stats["last"]
        steady = (count - 1) / (last - first) if count > 1 and last > first else 0.0
        overall = count / (last - started) if count and last else 0.0
        self.deliveries[name] = {
            "backlog": backlog,
            "delivered": count,
            "smtp_connections": stats["connections"],
            "rate": steady,
            "rate_from_start": overall,
            "seconds_first_to_last": (last - first) if count > 1 else None,
            "fill_seconds": filled["seconds"],
            "sink_ceiling": ceiling,
            "sink_ceiling_two_clients": ceiling_two,
            "connections": connections or 1,
            "worker_cpu_ms_per_email": worker_ms,
            "sink_cpu_ms_per_email": sink_ms,
            "note": "enquiries/s from the first email to the last at the sink; rate_from_start "
            "includes starting `flask outbox work`",
        }
        if count < backlog:
            self.problems.append(f"delivery: only {count} of {backlog} reached the sink")
        say(
            f"  service  delivered {count} in {last - first if count > 1 else 0:.1f} s: "
            f"{steady:.0f} enquiries/s ({overall:.0f}/s counting start-up), "
            f"over {stats['connections']} SMTP connections; CPU per email: worker "
            f"{fmt_cpu(worker_ms)}, sink {fmt_cpu(sink_ms)}"
        )

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> int:
        """Run everything; write the JSON and print the table. 0 unless the harness failed."""
        failed = False
        began = datetime.now(UTC)
        say(f"fixed rate: {FIXED_RATE}")
        try:
            self.sink = Sink(self.tmp)
            # `hello` first: every other run is paired with a short run of it.
            systems = sorted(self.args.systems, key=lambda name: name != "hello")
            steps = [(name, getattr(self, f"bench_{name}")) for name in systems]
            if "service" in self.args.systems and not self.args.no_delivery:
                steps.append(("delivery", self.bench_delivery))
                # The same backlog with OUTBOX_CONNECTIONS=2 (the default is one).
                two = functools.partial(self.bench_delivery, SERVICE_ROOT, "two_connections", 2)
                steps.append(("delivery-two-connections", two))
            if self.baseline_root is not None and not self.args.no_delivery:
                root = self.baseline_root
                steps.append(("baseline-delivery", lambda: self.bench_delivery(root, "baseline")))
            for name, step in steps:
                say(SYSTEMS.get(name, name.replace("-", " ")))
                step_started = time.monotonic()
                try:
                    step()
                except Exception as error:  # Keep the other systems' figures; report this one.
                    failed = True
                    self.problems.append(f"{name}: {type(error).__name__}: {error}")
                    say(f"  {name}: FAILED: {type(error).__name__}: {error}")
                self.timings[f"{name}_seconds"] = time.monotonic() - step_started
        finally:
            self.servers.close()
            if self.sink is not None:
                self.sink.stop()
            PROCESSES.stop_all()
        report = self.report(began)
        self.args.output.parent.mkdir(parents=True, exist_ok=True)
        self.args.output.write_text(json.dumps(report, indent=2) + "\n")
        markdown = render_markdown(report)
        self.args.output.with_suffix(".md").write_text(markdown)
        print(markdown)
        say(f"raw numbers: {self.args.output}; table: {self.args.output.with_suffix('.md')}")
        return 2 if failed else 0

    def clean_up(self) -> None:
        """Remove the run's databases, logs and request files, unless asked to keep them."""
        if self.baseline_root is not None:
            subprocess.run(
                ["git", "-C", str(SERVICE_ROOT), "worktree", "remove", "--force"]
                + [str(self.baseline_root)],
                check=False,
            )
        if self.args.keep_temp:
            say(f"kept databases and logs in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def report(self, began: datetime) -> dict:
        """Everything measured, as JSON-ready data."""
        hello = self.results["hello"].get("hello", {}).get("median", {}).get("rps")
        for systems in self.results.values():
            for system, entry in systems.items():
                base = entry["median"].get("paired_hello_rps") or hello
                entry["ratio_to_hello"] = entry["median"]["rps"] / base if base else None
                # The same comparison by what a request costs the server: hello's CPU per
                # request over this one's (1.0 for hello itself).
                cost = entry["median"].get("cpu_ms")
                paired_cost = entry["median"].get("paired_hello_cpu_ms")
                hello_cost = cost if system == "hello" else paired_cost
                entry["cpu_ratio_to_hello"] = hello_cost / cost if cost and hello_cost else None
        report = {
            "date": began.isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - STARTED, 1),
            "machine": machine(),
            "settings": {
                "duration_s": self.args.duration,
                "repetitions": self.args.reps,
                "warmup_s": self.args.warmup,
                "wrk": f"-t {self.args.wrk_threads} -c {self.args.connections} --timeout 30s",
                "fixed_rate": FIXED_RATE,
                "gunicorn": " ".join(self.gunicorn_flags(0)[2:]),
                "valid_requests_per_run": self.args.valid_requests,
                "backlog": self.args.backlog,
                "forged_captcha": self.args.forged_captcha,
                "rate_limits_for_other_scenarios": NO_LIMIT,
                "versions": versions(),
            },
            "systems": SYSTEMS,
            "scenarios": SCENARIOS,
            "results": self.results,
            "delivery": self.deliveries.get("service"),
            "flood": self.flood.get("service"),
            "baseline_delivery": self.deliveries.get("baseline"),
            "delivery_two_connections": self.deliveries.get("two_connections"),
            "memory": self.memory,
            "timings": self.timings,
            "problems": self.problems,
            "run_again": self.run_again,
        }
        report["targets"] = targets(report)
        return report


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> dict:
    """Cores, memory, CPU model, kernel."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
    }


def versions() -> dict:
    """Versions of the tools and frameworks measured."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("gunicorn", "Flask", "Flask-WTF", "Flask-Mail", "Django", "django-contact-form"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout
        found["wrk"] = out.split(" [")[0].removeprefix("wrk ").strip()
    return found


def median_of(report: dict, scenario: str, system: str, key: str = "rps") -> float | None:
    """A median figure, or None if that run did not happen."""
    entry = report["results"].get(scenario, {}).get(system)
    return entry["median"][key] if entry else None


def targets(report: dict) -> list[dict]:
    """The issue's targets, each with its figure and whether it holds."""
    checks: list[dict] = []

    def add(
        name: str,
        value: float | None,
        limit: float,
        at_least: bool,
        unit: str = "",
        by_cpu: float | None = None,
    ) -> None:
        passed = None if value is None else (value >= limit if at_least else value <= limit)
        checks.append(
            {
                "target": name,
                "value": value,
                "limit": limit,
                "comparison": ">=" if at_least else "<=",
                "unit": unit,
                "pass": passed,
                # The same ratio by server CPU per request: shown beside it, it decides nothing.
                "by_cpu": by_cpu,
            }
        )

    def ratio(scenario: str, system: str = "service", key: str = "ratio_to_hello") -> float | None:
        # To `hello` measured just before each repetition, where it was (see Run.hello_rps).
        entry = report["results"].get(scenario, {}).get(system)
        return entry.get(key) if entry else None

    def add_vs_hello(name: str, scenario: str, limit: float) -> None:
        # Judged by rate; the same ratio by server CPU per request is shown beside it.
        by_cpu = ratio(scenario, key="cpu_ratio_to_hello")
        add(f"{name} vs hello", ratio(scenario), limit, True, "x hello", by_cpu)

    def ratio_to_peer(peer: str) -> float | None:
        # Each system's rate as a share of `hello` next to it, so a slower VM minutes later
        # does not count against the one measured later.
        ours, theirs = ratio("valid_json"), ratio("valid_html", peer)
        return ours / theirs if ours is not None and theirs else None

    add_vs_hello("form page GET", "page", 0.7)
    for kind in REFUSALS:
        add_vs_hello(SCENARIOS[kind], kind, 0.5)
    add_vs_hello(SCENARIOS["invalid"], "invalid", 0.3)
    add_vs_hello("valid submission (JSON)", "valid_json", 0.25)
    for peer in ("tutorial", "django"):
        add(
            f"valid submission (JSON) vs {peer}",
            ratio_to_peer(peer),
            2.5,
            True,
            f"x {peer}",
        )
    add(
        "valid submission (JSON) p99",
        median_of(report, "valid_json", "service", "p99_ms"),
        40,
        False,
        "ms",
    )
    memory = report["memory"].get("service", {}).get("max_mb")
    add("RSS per worker", memory, 60, False, "MiB")
    delivery = report["delivery"]["rate"] if report.get("delivery") else None
    add("delivery from a backlog", delivery, 1000, True, "enquiries/s")
    flood = report.get("flood")
    everyone = flood is not None and flood["accepted"] == flood["delivered"] == flood["patients"]
    add(
        "patients through a flood: share that got 202 and were delivered",
        (flood["delivered"] or 0) / flood["patients"] if flood else None,
        1.0,
        True,
        "",
    )
    add(
        "patients through a flood: p99",
        flood["p99_ms"] if flood and everyone else None,
        250,
        False,
        "ms",
    )
    return checks


def fmt_rps(value: float) -> str:
    """Requests per second, as a whole number with thousands separators."""
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    """Milliseconds: two decimals under 10 ms, one above."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def render_markdown(report: dict) -> str:
    """The table, the targets and any problems, as markdown."""
    m = report["machine"]
    s = report["settings"]
    systems = list(SYSTEMS)
    letters = {name: label.split(" ", 1)[0] for name, label in SYSTEMS.items()}
    lines = [
        f"Run {report['date']} on {m['cores']} cores, {m['memory_gb']} GB ({m['cpu']}; "
        f"Linux {m['kernel']}; Python {m['python']}). "
        f"wrk {s['wrk']}, {s['duration_s']} s x {s['repetitions']} (median); "
        f"fixed rate: {s['fixed_rate']}. gunicorn {s['gunicorn']}, the same for every system.",
        "",
        "Systems: " + "; ".join(f"{label}" for label in SYSTEMS.values()) + ".",
        "",
    ]
    header = ["Scenario"]
    for name in systems:
        letter = letters[name]
        header += [f"{letter} req/s", f"{letter} p50 ms", f"{letter} p99 ms", f"{letter} ×(a)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| --- " + "| ---: " * (len(header) - 1) + "|")
    for scenario, label in SCENARIOS.items():
        row = [label]
        for name in systems:
            entry = report["results"][scenario].get(name)
            if entry is None:
                row += ["n/a", "", "", ""]
                continue
            med = entry["median"]
            flag = " !" if entry["unexpected"] else ""
            if entry["mode"] == "once":
                flag += " ‡"
            ratio = entry.get("ratio_to_hello")
            row += [
                fmt_rps(med["rps"]) + flag,
                fmt_ms(med["p50_ms"]),
                fmt_ms(med["p99_ms"]),
                f"{ratio:.2f}" if ratio is not None else "",
            ]
        lines.append("| " + " | ".join(row) + " |")
    deliveries = {"service": report.get("delivery"), "baseline": report.get("baseline_delivery")}
    row = [f"delivery from a backlog of {s['backlog']:,} (enquiries/s to the sink)"]
    for name in systems:
        delivery = deliveries.get(name)
        if delivery:
            row += [fmt_rps(delivery["rate"]), "", "", ""]
        elif name in ("tutorial", "django"):
            row += ["n/a (inline)", "", "", ""]
        else:
            row += ["n/a", "", "", ""]
    lines.append("| " + " | ".join(row) + " |")
    two = report.get("delivery_two_connections")
    if two:
        row = ["the same backlog with OUTBOX_CONNECTIONS=2 (enquiries/s to the sink)"]
        for name in systems:
            row += [fmt_rps(two["rate"]) if name == "service" else "", "", "", ""]
        lines.append("| " + " | ".join(row) + " |")
    for key, label in SINK_CEILINGS:
        row = [f"the sink's ceiling: {label} sending one prebuilt email (emails/s)"]
        for name in systems:
            ceiling = (deliveries.get(name) or {}).get(key)
            row += [fmt_rps(ceiling["rate"]) if ceiling else "n/a", "", "", ""]
        lines.append("| " + " | ".join(row) + " |")
    row = ["RSS per gunicorn worker after the runs (MB, largest)"]
    hello_mb = report["memory"].get("hello", {}).get("max_mb")
    for name in systems:
        mb = report["memory"].get(name, {}).get("max_mb")
        if mb is None:
            row += ["n/a", "", "", ""]
        else:
            row += [f"{mb:.1f}", "", "", f"{mb / hello_mb:.2f}" if hello_mb else ""]
    lines.append("| " + " | ".join(row) + " |")
    flood = report.get("flood")
    if flood:
        junk = flood.get("junk") or {}
        row = [
            f"patients through a flood: {flood['patients']} valid JSON enquiries, one every "
            f"{FLOOD_EVERY * 1000:.0f} ms from their own addresses, while wrk sends junk "
            f"({junk.get('rps', 0):,.0f} req/s, {junk.get('statuses', {})})"
        ]
        for name in systems:
            if name == "service":
                row += [
                    f"{flood['accepted']} × 202, {flood['delivered']} delivered",
                    fmt_ms(flood["p50_ms"]),
                    fmt_ms(flood["p99_ms"]),
                    "",
                ]
            else:
                row += ["n/a", "", "", ""]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "×(a): median req/s divided by the median of the `hello` runs paired with it (a run of "
        "half the duration just before each repetition, since the VM's speed moves within "
        "minutes; (a)'s own row is its first runs); for RSS: divided by (a)'s worker RSS. "
        "n/a: the system has no such feature (no JSON API, no "
        "captcha, no rate limit), or sends mail inline. ! some answers had an unexpected status "
        "(see the JSON's `problems`). ‡ each request carries its own freshly solved captcha and "
        f"is sent once: {s['valid_requests_per_run']:,} requests per run instead of a fixed "
        "duration.",
        *steal_note(report),
        *run_again_note(report),
        *cpu_table(report),
        *delivery_cpu_table(report),
        "",
        "Targets (2 gunicorn workers, 16 connections):",
        "",
    ]
    for check in report["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[check["pass"]]
        value = check["value"]
        shown = "not measured" if value is None else f"{value:,.2f} {check['unit']}".strip()
        by_cpu = check.get("by_cpu")
        lines.append(
            f"- {verdict} {check['target']}: {shown} "
            f"(target {check['comparison']} {check['limit']:g} {check['unit']})".rstrip()
            + (f"; by server CPU per request: {by_cpu:.2f}" if by_cpu is not None else "")
        )
    if report["problems"]:
        lines += ["", "Problems seen during the run:", ""]
        lines += [f"- {problem.splitlines()[0]}" for problem in report["problems"]]
    return "\n".join(lines) + "\n"


def cpu_table(report: dict) -> list[str]:
    """Server CPU per answered request, by scenario and system, with hello's over it."""
    rows = []
    for scenario, systems in report["results"].items():
        cells = []
        for system, entry in systems.items():
            cost, share = entry["median"].get("cpu_ms"), entry.get("cpu_ratio_to_hello")
            if cost is not None:
                shown = f"{cost:.2f} ms" + (f" ({share:.2f})" if share is not None else "")
                cells.append(f"{SYSTEMS[system].split(' ', 1)[0]} {shown}")
        if cells:
            rows.append(f"| {SCENARIOS[scenario]} | {'; '.join(cells)} |")
    if not rows:
        return []
    return [
        "",
        "Server CPU per answered request (gunicorn's master and workers, median of the "
        "repetitions), and in brackets the CPU per request of the `hello` runs paired with it "
        "divided by it: the same comparison as ×(a), by cost rather than by rate, which the "
        "VM's neighbours move less. wrk's own CPU is not in it.",
        "",
        "| Scenario | server CPU per request (×(a) by CPU) |",
        "| --- | --- |",
        *rows,
    ]


def fmt_cpu(ms: float | None) -> str:
    """CPU milliseconds for the console, or n/a."""
    return "n/a" if ms is None else f"{ms:.2f} ms"


def delivery_cpu_table(report: dict) -> list[str]:
    """CPU per email of the delivery runs, and of the sink's ceilings, as a table."""
    rows = delivery_cpu_rows(report)
    if not rows:
        return []
    return [
        "",
        "CPU per email (`/proc/PID/stat`; for `outbox work`, from the first email at the sink to "
        "the last, so without its start-up): on 2 cores, 1,000 emails a second leave 2 ms for "
        "the worker and the sink together.",
        "",
        "| Run | CPU per email |",
        "| --- | --- |",
        *rows,
    ]


def delivery_cpu_rows(report: dict) -> list[str]:
    """CPU per email of the delivery runs: the worker's and the sink's, and the bare client's."""
    rows = []
    for key, label in (
        ("delivery", "delivery from a backlog"),
        ("delivery_two_connections", "the same backlog with OUTBOX_CONNECTIONS=2"),
        ("baseline_delivery", "delivery from a backlog, baseline"),
    ):
        run = report.get(key) or {}
        worker, sink = run.get("worker_cpu_ms_per_email"), run.get("sink_cpu_ms_per_email")
        if worker is not None and sink is not None:
            rows.append(f"| {label} | `outbox work` {worker:.2f} ms; sink {sink:.2f} ms |")
    # The ceilings are measured once, before the default delivery run.
    for name, label in SINK_CEILINGS:
        ceiling = (report.get("delivery") or {}).get(name) or {}
        if ceiling.get("sink_cpu_ms_per_email") is not None:
            rows.append(
                f"| the sink's ceiling, {label} | client "
                f"{ceiling['client_cpu_ms_per_email']:.2f} ms; sink "
                f"{ceiling['sink_cpu_ms_per_email']:.2f} ms |"
            )
    return rows


def steal_note(report: dict) -> list[str]:
    """A sentence on the CPU time the hypervisor took from the runs, if the machine says."""
    steals = [
        (run["steal_pct"], f"{system} / {scenario}")
        for scenario, systems in report["results"].items()
        for system, entry in systems.items()
        for run in entry["runs"]
        if run.get("steal_pct") is not None
    ]
    if not steals:
        return []
    worst, where = max(steals)
    median = statistics.median(value for value, _ in steals)
    return [
        "",
        f"CPU steal (time the hypervisor gave to other guests) during the wrk runs: median "
        f"{median:.1f} %, at most {worst:.1f} % ({where}).",
    ]


def run_again_note(report: dict) -> list[str]:
    """A sentence on the repetitions run again because one worker held every connection."""
    again = report.get("run_again") or []
    lines = [
        "",
        "wrk's connections by gunicorn worker, counted once all are open: a repetition in which "
        "one worker held all of them (or its paired `hello` run did) measured one worker, not two, "
        f"and was run again, at most {ATTEMPTS_PER_REPETITION} times in all; "
        + (f"{len(again)} were: " + "; ".join(again) + "." if again else "none was."),
    ]
    return lines


def main() -> int:
    """Run the benchmark."""
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: run bench/run, which installs it.", file=sys.stderr)
        return 2

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    bench = Bench(args)
    try:
        return bench.run()
    finally:
        PROCESSES.stop_all()
        bench.clean_up()


if __name__ == "__main__":
    sys.exit(main())
