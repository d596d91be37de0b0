"""Random tokens read a block at a time: the format of `secrets`, and never one given twice."""

from __future__ import annotations

import os
import re
import secrets
import threading

import pytest

from service.ops import random_tokens

URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def test_tokens_have_the_length_and_alphabet_of_secrets() -> None:
    for count in (1, 2, 3, 16, 18, 33):
        token = random_tokens.token_urlsafe(count)
        assert URLSAFE.fullmatch(token)
        assert len(token) == len(secrets.token_urlsafe(count))
    assert len(random_tokens.token_bytes(7)) == 7


def test_tokens_across_many_blocks_are_all_different() -> None:
    tokens = [random_tokens.token_urlsafe(18) for _ in range(20 * random_tokens.BLOCK // 18)]
    assert len(set(tokens)) == len(tokens)
    # A request for more than a block is served whole.
    assert len(random_tokens.token_bytes(random_tokens.BLOCK + 1)) == random_tokens.BLOCK + 1


def test_threads_never_share_bytes() -> None:
    tokens: list[list[bytes]] = [[] for _ in range(4)]

    def take(mine: list[bytes]) -> None:
        mine.extend(random_tokens.token_bytes(16) for _ in range(3000))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [token for mine in tokens for token in mine]
    assert len(set(every)) == len(every) == 12000


def test_a_forked_child_does_not_hand_out_its_parents_bytes() -> None:
    random_tokens.token_bytes(16)  # the parent now holds a block with bytes still to give
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        try:
            os.write(writing, b"".join(random_tokens.token_bytes(16) for _ in range(256)))
        finally:
            os._exit(0)
    os.close(writing)
    given = b""
    while chunk := os.read(reading, 65536):
        given += chunk
    os.close(reading)
    os.waitpid(child, 0)

    childs = {given[start : start + 16] for start in range(0, len(given), 16)}
    parents = {random_tokens.token_bytes(16) for _ in range(256)}
    assert len(childs) == 256
    assert not childs & parents


def test_a_negative_count_is_refused_as_secrets_refuses_it() -> None:
    with pytest.raises(ValueError):
        random_tokens.token_bytes(-1)
    first, second = random_tokens.token_bytes(8), random_tokens.token_bytes(8)
    assert first != second
