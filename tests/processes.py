"""The service as real processes: gunicorn, `flask outbox work` workers, and HTTP requests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to 127.0.0.1:`port`; the status, the headers (lower-case) and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


class Gunicorn:
    """`gunicorn wsgi:app` on 127.0.0.1, configured only by `env`; stopped with SIGTERM."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 1) -> None:
        self.env = {"PATH": os.environ["PATH"], **env}
        self.log_path = log_path
        self.workers = workers
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        """What gunicorn and the app wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> Gunicorn:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        command = [str(gunicorn), "--bind", f"127.0.0.1:{self.port}"]
        command += ["--workers", str(self.workers), "wsgi:app"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(self.port, "GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"gunicorn did not come up:\n{self.log()}"
            time.sleep(0.2)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Workers:
    """Starts `flask --app wsgi outbox work` processes; none outlives the test."""

    def __init__(self, app_config: dict[str, Any], tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []
        # Only what the worker needs: nothing leaks in from the environment running the tests.
        self.env = {
            "PATH": os.environ["PATH"],
            "SERVICE_ENV": "testing",
            "SECRET_KEY": app_config["SECRET_KEY"],
            "DATABASE_URL": app_config["DATABASE_URL"],
            "AUTO_MIGRATE": "false",  # the test's app has created the schema already
            "MAIL_SERVER": app_config["MAIL_SERVER"],
            "MAIL_PORT": str(app_config["MAIL_PORT"]),
            "MAIL_TIMEOUT": str(app_config["MAIL_TIMEOUT"]),
            "CLINIC_INBOX": app_config["CLINIC_INBOX"],
            "MAIL_DEFAULT_SENDER": app_config["MAIL_DEFAULT_SENDER"],
            "DELIVERY_WORKER": "external",
            "OUTBOX_POLL_SECONDS": "0.2",
        }

    def start(self, **settings: str) -> subprocess.Popen[bytes]:
        """Start a worker with the base settings plus `settings`; its output goes to a log file."""
        log = self.log_path(len(self.processes))
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "outbox", "work"],
                cwd=ROOT,
                env={**self.env, **settings},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def log_path(self, index: int) -> Path:
        """Where the index-th worker writes its output."""
        return self.tmp_path / f"worker-{index}.log"

    def log(self, process: subprocess.Popen[bytes]) -> str:
        """Everything a worker has printed so far."""
        return self.log_path(self.processes.index(process)).read_text(errors="replace")

    def logs(self) -> str:
        """Every worker's output, for an assertion message."""
        return "\n".join(f"--- worker pid {p.pid}:\n{self.log(p)}" for p in self.processes)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """kill -9: no handler runs, nothing is released, nothing is committed."""
        process.kill()
        process.wait(10)

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 10) -> int:
        """SIGTERM, then the exit status once the worker has finished its message in flight."""
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {process.pid} ignored SIGTERM for {timeout}s\n{self.logs()}")

    def close(self) -> None:
        """Kill whatever is still running and reap every process."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
