"""Sealed at rest: an enquiry's personal fields stored as a box that only the private key opens.

Each enquiry is sealed with a fresh X25519 key agreed with SEAL_PUBLIC_KEY, and encrypted with
ChaCha20-Poly1305 under a key derived from it (HKDF-SHA256), its id bound in as associated data
so a box cannot be moved to another enquiry. The web tier needs only the public key: what it
stores, it cannot read back. The worker and the operator's commands hold the private key(s).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

from .models import Enquiry

# The columns a box holds; in a sealed row they are NULL.
FIELDS = ("name", "email", "phone", "message", "page_url")
VERSION = b"\x01"
INFO = b"contact-form seal v1"
NONCE = bytes(12)  # every box has a key of its own, used once


class NotAKey(ValueError):
    """A key in the settings is not a key."""


class CannotOpen(Exception):
    """No private key at hand opens this box, or the box is damaged."""


class MissingKey(CannotOpen):
    """The box is sealed to a key that this process does not hold."""


@dataclass(frozen=True)
class Keys:
    """The keys of one process: the public key it seals to, and the private keys it holds."""

    public: X25519PublicKey | None = None
    private: dict[str, X25519PrivateKey] = field(default_factory=dict)

    @property
    def public_id(self) -> str | None:
        """The id stored beside each box sealed to the public key."""
        return key_id(self.public) if self.public is not None else None


def key_id(public: X25519PublicKey) -> str:
    """A short fingerprint of a public key."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def _raw(text: str, name: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise NotAKey(
            f"{name} is not a key: use a value that `flask --app wsgi keys generate` printed"
        )
    return raw


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def load(public: str, private: str) -> Keys:
    """Read SEAL_PUBLIC_KEY and SEAL_PRIVATE_KEY (comma-separated: the current key first)."""
    public_key = (
        X25519PublicKey.from_public_bytes(_raw(public, "SEAL_PUBLIC_KEY")) if public else None
    )
    private_keys: dict[str, X25519PrivateKey] = {}
    for item in (part for part in private.split(",") if part.strip()):
        key = X25519PrivateKey.from_private_bytes(_raw(item, "SEAL_PRIVATE_KEY"))
        private_keys[key_id(key.public_key())] = key
    return Keys(public_key, private_keys)


def generate() -> tuple[str, str]:
    """A new key pair, as the settings take them: (public, private)."""
    private = X25519PrivateKey.generate()
    return _text(private.public_key().public_bytes_raw()), _text(private.private_bytes_raw())


def _box_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(SHA256(), 32, salt=None, info=INFO + ephemeral + recipient).derive(shared)


def seal(values: Mapping[str, str | None], enquiry_id: str, public: X25519PublicKey) -> str:
    """Seal the personal fields of one enquiry to `public`."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes_raw()
    key = _box_key(ephemeral.exchange(public), ephemeral_raw, public.public_bytes_raw())
    plain = json.dumps({name: values.get(name) for name in FIELDS}).encode("utf-8", "surrogatepass")
    boxed = ChaCha20Poly1305(key).encrypt(NONCE, plain, enquiry_id.encode())
    return base64.b64encode(VERSION + ephemeral_raw + boxed).decode()


def open_box(
    sealed: str, sealed_to: str | None, enquiry_id: str, keys: Keys
) -> dict[str, str | None]:
    """The personal fields of a sealed enquiry; CannotOpen without its key, or if damaged."""
    private = keys.private.get(sealed_to or "")
    if private is None:
        raise MissingKey(
            f"sealed to key {sealed_to}, which SEAL_PRIVATE_KEY does not hold: give this "
            "process the private key (the current one first, older ones after it)"
        )
    try:
        raw = base64.b64decode(sealed)
        if raw[:1] != VERSION:
            raise ValueError("unknown version")
        ephemeral_raw, boxed = raw[1:33], raw[33:]
        ephemeral = X25519PublicKey.from_public_bytes(ephemeral_raw)
        recipient = private.public_key().public_bytes_raw()
        key = _box_key(private.exchange(ephemeral), ephemeral_raw, recipient)
        plain = ChaCha20Poly1305(key).decrypt(NONCE, boxed, enquiry_id.encode())
        values = json.loads(plain.decode("utf-8", "surrogatepass"))
    except (InvalidTag, ValueError, binascii.Error) as error:
        raise CannotOpen("the sealed fields are damaged") from error
    return {name: values.get(name) for name in FIELDS}


def opened(enquiry: Enquiry, keys: Keys) -> Enquiry:
    """A copy of the enquiry, in memory only, with its personal fields readable; CannotOpen."""
    if enquiry.sealed is None:
        return enquiry
    values = open_box(enquiry.sealed, enquiry.sealed_to, enquiry.id, keys)
    # A new object that no session knows: the plain fields can never be written back.
    columns = {column.name: getattr(enquiry, column.name) for column in Enquiry.__table__.columns}
    return Enquiry.detached(columns | values)


def sealed_row(values: Mapping[str, str | None], keys: Keys) -> dict[str, str | None]:
    """A new enquiry's row as it is stored: its personal fields sealed, if there is a key."""
    row = dict(values)
    if keys.public is None:
        return row
    row["sealed"] = seal(values, str(values["id"]), keys.public)
    row["sealed_to"] = keys.public_id
    for name in FIELDS:
        row[name] = None
    return row


def current_keys() -> Keys:
    """This app's keys."""
    keys: Keys = current_app.extensions["seal_keys"]
    return keys
