"""A local SMTP sink for the benchmark: accepts every message, counts it, and reports the count.

Run as `python sink.py SMTP_PORT CONTROL_PORT`, both on 127.0.0.1. A client of the control port
sends one line, `STATS` or `RESET`, and reads one JSON line back:
{"count": messages since the last reset, "connections": SMTP connections opened since then,
"first": time.time() of the first message, "last": of the last}.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"


class Counter:
    """The aiosmtpd handler: 250 for every message, and a count with the first and last times."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start counting from zero."""
        self.count = 0
        self.connections = 0
        self.first: float | None = None
        self.last: float | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """Count the message (aiosmtpd calls this once per DATA)."""
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.count += 1
        return "250 OK"

    def stats(self) -> dict:
        """The count and the times of the first and last message."""
        return {
            "count": self.count,
            "connections": self.connections,
            "first": self.first,
            "last": self.last,
        }


class CountingSMTP(SMTP):
    """aiosmtpd's SMTP server, counting connections: the delivery run's reuse shows in it."""

    def __init__(self, counter: Counter) -> None:
        # A fixed hostname: aiosmtpd would otherwise look up the machine's FQDN per connection.
        super().__init__(counter, hostname="bench-sink", ident="bench-sink")
        self.counter = counter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection."""
        self.counter.connections += 1
        super().connection_made(transport)


async def main(smtp_port: int, control_port: int) -> None:
    """Serve SMTP and the control port until SIGTERM or SIGINT."""
    counter = Counter()
    loop = asyncio.get_running_loop()

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = (await reader.readline()).decode().strip().upper()
        if command == "RESET":
            counter.reset()
        writer.write((json.dumps(counter.stats()) + "\n").encode())
        await writer.drain()
        writer.close()

    smtp = await loop.create_server(lambda: CountingSMTP(counter), HOST, smtp_port)
    ctl = await asyncio.start_server(control, HOST, control_port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"sink: SMTP on {HOST}:{smtp_port}, control on {HOST}:{control_port}", flush=True)
    await stop.wait()
    smtp.close()
    ctl.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
