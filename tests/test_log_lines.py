"""The log handler: every line written once and whole, and no thread kept waiting for another."""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from service.ops import logs
from service.ops.logs import _StreamHandler


class SlowStream:
    """A stream that keeps each write's text and lets go of the GIL while writing."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.first_write_may_end = threading.Event()
        self.first_write_started = threading.Event()
        self.first_write_may_end.set()
        self.first_flush_may_end = threading.Event()
        self.first_flush_started = threading.Event()
        self.first_flush_may_end.set()

    def write(self, text: str) -> None:
        if not self.first_write_started.is_set():
            self.first_write_started.set()
            self.first_write_may_end.wait(10)
        time.sleep(0.0002)
        self.writes.append(text)

    def flush(self) -> None:
        if not self.first_flush_started.is_set():
            self.first_flush_started.set()
            self.first_flush_may_end.wait(10)


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> SlowStream:
    slow = SlowStream()
    # The handler finds its stream on sys by name; pytest's capture puts back its own stdout.
    monkeypatch.setattr(sys, "log_lines_stream", slow, raising=False)
    return slow


@pytest.fixture
def handler(stream: SlowStream) -> _StreamHandler:
    handler = _StreamHandler("log_lines_stream")
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


@pytest.fixture
def logger(handler: _StreamHandler) -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.log_lines")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger
    logger.removeHandler(handler)


def test_lines_from_four_threads_are_each_written_once_and_whole(
    logger: logging.Logger, stream: SlowStream
) -> None:
    def log_lines(thread: int) -> None:
        for number in range(2000):
            logger.info("thread %d line %d", thread, number)

    threads = [threading.Thread(target=log_lines, args=(thread,)) for thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(text.endswith("\n") for text in stream.writes)
    lines = "".join(stream.writes).splitlines()
    expected = {f"thread {thread} line {number}" for thread in range(4) for number in range(2000)}
    assert len(lines) == len(expected) == len(set(lines))
    assert set(lines) == expected
    # Lines that waited were written together, by whoever held the lock.
    assert len(stream.writes) < len(lines)


def test_a_line_logged_while_another_thread_writes_is_left_to_that_thread(
    logger: logging.Logger, stream: SlowStream
) -> None:
    stream.first_write_may_end.clear()
    writer = threading.Thread(target=logger.info, args=("first",))
    writer.start()
    assert stream.first_write_started.wait(10)

    started = time.perf_counter()
    logger.info("second")
    waited = time.perf_counter() - started

    assert stream.writes == []  # the first write has not ended, and "second" did not wait for it
    assert waited < 5
    stream.first_write_may_end.set()
    writer.join(10)
    assert stream.writes == ["first\n", "second\n"]


def test_a_line_logged_while_the_stream_is_flushed_is_written_by_the_flush(
    logger: logging.Logger, handler: _StreamHandler, stream: SlowStream
) -> None:
    stream.first_flush_may_end.clear()
    flusher = threading.Thread(target=handler.flush)
    flusher.start()
    assert stream.first_flush_started.wait(10)

    logger.info("during a flush")

    assert stream.writes == []
    stream.first_flush_may_end.set()
    flusher.join(10)
    assert stream.writes == ["during a flush\n"]


def test_a_line_logged_while_shutdown_holds_the_lock_is_written_when_it_lets_go(
    logger: logging.Logger, handler: _StreamHandler, stream: SlowStream
) -> None:
    holder_has_lock, may_release = threading.Event(), threading.Event()

    def hold() -> None:
        handler.acquire()  # as logging.shutdown does, around its flush and close
        holder_has_lock.set()
        may_release.wait(10)
        handler.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holder_has_lock.wait(10)
    logger.info("late")
    assert stream.writes == []
    may_release.set()
    holder.join(10)
    assert stream.writes == ["late\n"]


def test_past_the_limit_a_line_waits_for_a_stalled_stream_and_none_is_lost(
    logger: logging.Logger, stream: SlowStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "WAITING_LINES_HELD", 5)
    stream.first_write_may_end.clear()
    writer = threading.Thread(target=logger.info, args=("first",))
    writer.start()
    assert stream.first_write_started.wait(10)
    for number in range(5):
        logger.info("held %d", number)  # within the limit: left to the writer at once

    over_the_limit = threading.Thread(target=logger.info, args=("sixth",))
    over_the_limit.start()
    over_the_limit.join(0.5)
    assert over_the_limit.is_alive()  # it waits for the stream instead of adding to the pile

    stream.first_write_may_end.set()
    writer.join(10)
    over_the_limit.join(10)
    lines = "".join(stream.writes).splitlines()
    assert lines == ["first", *(f"held {number}" for number in range(5)), "sixth"]


class FailingStream:
    """A stream whose writes fail with an error that quotes a patient, chained to another."""

    # Not on the lines that raise: frames quote those.
    patient = ("Jane Patient", "jane@example.com")

    def write(self, text: str) -> None:
        name, address = self.patient
        try:
            raise KeyError(name)
        except KeyError as cause:
            raise ValueError(f"cannot write {address}") from cause

    def flush(self) -> None:
        pass


def test_a_line_the_stream_cannot_take_is_reported_by_frames_only(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "log_lines_stream", FailingStream(), raising=False)
    report = io.StringIO()
    monkeypatch.setattr(sys, "stderr", report)

    logger.info("enquiry %s", "stored")

    assert report.getvalue().startswith("--- Logging error ---\nValueError\n")
    assert "in write" in report.getvalue()
    for quoted in ("jane@example.com", "Jane Patient", "KeyError", "stored"):
        assert quoted not in report.getvalue()


class QuotingFormatter(logging.Formatter):
    """A formatter that fails, quoting the record's arguments."""

    def format(self, record: logging.LogRecord) -> str:
        raise TypeError(f"cannot format {record.args!r}")


def test_a_line_that_cannot_be_formatted_is_reported_without_its_arguments(
    logger: logging.Logger,
    handler: _StreamHandler,
    stream: SlowStream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler.setFormatter(QuotingFormatter())
    report = io.StringIO()
    monkeypatch.setattr(sys, "stderr", report)

    logger.info("from %s", "jane@example.com")

    assert report.getvalue().startswith("--- Logging error ---\nTypeError\n")
    assert "jane@example.com" not in report.getvalue()
    assert stream.writes == []
