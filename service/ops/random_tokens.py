"""Random tokens for every request, read from the kernel a block at a time."""

from __future__ import annotations

import base64
import os
import threading

# Bytes each thread reads at once: 200 form tokens, or 250 script nonces.
BLOCK = 4096


class _ThreadBlocks(threading.local):
    """One thread's unread random bytes."""

    block = b""
    used = 0


_blocks = _ThreadBlocks()


def _forget_after_fork() -> None:
    # A forked child must not hand out bytes its parent may hand out too.
    global _blocks
    _blocks = _ThreadBlocks()


os.register_at_fork(after_in_child=_forget_after_fork)


def token_bytes(count: int) -> bytes:
    """`count` bytes from os.urandom, none of them ever given out twice."""
    # os.urandom lets go of the GIL for its system call; with four request threads, two calls a
    # page made each thread queue for it again, and a page cost twice its CPU. Each thread has
    # its own block, so no lock is needed; the bytes are the kernel's, only read in advance.
    if count < 0:
        raise ValueError("count must not be negative")  # as secrets.token_bytes refuses it
    mine = _blocks
    if mine.used + count > len(mine.block):
        mine.block, mine.used = os.urandom(max(BLOCK, count)), 0
    start = mine.used
    mine.used = start + count
    return mine.block[start : start + count]


def token_urlsafe(count: int) -> str:
    """As secrets.token_urlsafe: `count` random bytes in unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(token_bytes(count)).rstrip(b"=").decode("ascii")
