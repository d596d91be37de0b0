"""The fields of posts this process refused: the same four strings again skip their checks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from flask import Flask, current_app

from .bounded import REFUSALS_HELD, Bounded
from .validation import FIELDS

MOST = REFUSALS_HELD

# What the checks found, as (field, text) pairs: no patient's words, only the texts shown.
Errors = tuple[tuple[str, str], ...]


class RefusedFields(Bounded[bytes, Errors]):
    """The field checks' errors (none if only the captcha failed), by keyed digest of the fields."""

    def __init__(self) -> None:
        super().__init__(MOST)
        # This process's own key, never stored or logged: a digest cannot be matched against a
        # guessed name or number anywhere else, so it says nothing about what the patient wrote.
        self.key = os.urandom(32)
        # The few distinct error sets, held once however many posts share one.
        self.shapes: dict[Errors, Errors] = {}

    def digest(self, posted: Mapping[str, str | None], region: str) -> bytes:
        """A keyed digest of the four fields as posted and the phone's default region."""
        hashed = hashlib.blake2b(key=self.key, digest_size=16)
        for value in (region, *(posted.get(name) or "" for name in FIELDS)):
            encoded = value.encode("utf-8", "surrogatepass")
            # Each value's length first, so that no two different posts hash the same bytes.
            hashed.update(len(encoded).to_bytes(8, "big"))
            hashed.update(encoded)
        return hashed.digest()

    def remember(self, digest: bytes, errors: Mapping[str, str]) -> None:
        """Note what the checks found in the fields of a refused post: it can never change."""
        shape = tuple(errors.items())
        self.add(digest, self.shapes.setdefault(shape, shape))


def init_app(app: Flask) -> None:
    """Give the app an empty record, under a key of its own."""
    app.extensions["refused_fields"] = RefusedFields()


def record() -> RefusedFields:
    """This app's record of refused posts' fields."""
    refused: RefusedFields = current_app.extensions["refused_fields"]
    return refused
