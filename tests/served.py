"""A socketserver-style server answering from a daemon thread for the length of a `with` block."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Self


class ServedInThread:
    """Runs `self.server.serve_forever` in a thread; shuts it down and closes it on exit."""

    server: Any

    def serve(self, server: Any, poll_interval: float = 0.5) -> None:
        """Take `server` to run when the `with` block starts."""
        self.server = server
        self.thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        )

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()
