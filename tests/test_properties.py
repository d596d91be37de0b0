"""For any input, the validators give a known text or a clean value, and the email stays safe."""

from __future__ import annotations

import email
import email.policy
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.headerregistry import Address
from typing import Any

import markupsafe
import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from service import create_app
from service.delivery.message import ascii_email, build_message
from service.intake import validation as v
from service.store.models import Enquiry

INBOX = "front-desk@clinic.example"
SENDER = "Contact form <forms@clinic.example>"
HEADERS = {
    "Content-Type",
    "MIME-Version",
    "Subject",
    "From",
    "To",
    "Date",
    "Message-ID",
    "Reply-To",
    "Auto-Submitted",
    "X-Enquiry-ID",
}
# RFC 2047's grammar: a mail reader would decode this, so it must not survive in a name.
ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# Fixed examples and no example database: the same cases on every run and in CI, in seconds.
FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None)
MAIL = settings(max_examples=150, deadline=None, derandomize=True, database=None)

# Pieces an attacker would splice into a value, mixed with arbitrary text.
TRICKS = st.sampled_from(
    [
        "\r",
        "\n",
        "\r\n",
        "\r\n.\r\n",
        "\n.\n",
        "\u2028",
        "\u2029",
        "\u0085",
        "\x00",
        "\t",
        "\x0b",
        "\x0c",
        "\x1b",
        "\x7f",
        "\u202e",
        "\u2066",
        "\u200d",
        "\ufeff",
        "=?UTF-8?Q?=0A?=",
        "=?utf-8?b?Cg==?=",
        "Bcc: x@evil.example",
        "To: x@evil.example",
        "<script>alert(1)</script>",
        '<a href="javascript:alert(1)">',
        '<img src="http://tracker.example/p.png">',
        '"',
        "<",
        ">",
        ",",
        ";",
        "@",
        ".",
        " ",
        "MAIL FROM:<x@evil.example>",
    ]
)
# Any code point but a lone surrogate (which JSON can carry, but a form post cannot).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=["Cs"]), max_size=30)
HOSTILE = st.lists(st.one_of(ANY_TEXT, TRICKS), max_size=8).map("".join)
# Lone surrogates too, as json.loads("\"\\ud800\"") produces them.
WITH_SURROGATES = st.lists(
    st.one_of(HOSTILE, st.characters(categories=["Cs"]).map(str)), max_size=4
).map("".join)
# Long names full of address syntax: what a mail library must quote or encode, and fold.
NAMES = st.one_of(
    HOSTILE,
    WITH_SURROGATES,
    st.lists(
        st.sampled_from(
            ["Jane", "Citizen", "x@evil.example", ",", ":", ";", "<", ">", '"', "(", ")", " "]
            + ["\\", "ö", "李", "=?", "?="]
        ),
        min_size=5,
        max_size=40,
    ).map("".join),
)
# One paragraph longer than SMTP's 998-octet line, with hostile text before it.
LONG_LINES = st.tuples(HOSTILE, st.integers(999, 4500)).map(lambda pair: pair[0] + "y" * pair[1])
EMAILS = st.one_of(
    st.emails(),
    st.tuples(st.emails(), TRICKS, st.emails()).map("".join),
    st.tuples(HOSTILE, st.just("@"), st.sampled_from(["example.com", "bücher.example"])).map(
        "".join
    ),
    WITH_SURROGATES,
)
PHONES = st.one_of(
    st.from_regex(r"\A\+?[0-9 ()-]{0,20}\Z"),
    st.tuples(st.sampled_from(["0412 345 678", "+61 2 9876 5432"]), TRICKS).map("".join),
    WITH_SURROGATES,
)


def _line_breaks(value: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Zl", "Zp", "Cs"} for ch in value)


def _squeezed(value: str) -> str:
    return "".join(value.split())


def _cleaned(check: Callable[..., Any], value: str, known: set[str], *args: Any) -> Any:
    """Run a check; a refusal must carry one of the known texts (returned as None)."""
    try:
        return check(value, *args)
    except v.FieldError as error:
        assert str(error) in known
        return None


NAME_TEXTS = {v.NAME_REQUIRED, v.NAME_TOO_LONG, v.NAME_NOT_PLAIN}
MESSAGE_TEXTS = {v.MESSAGE_REQUIRED, v.MESSAGE_TOO_LONG, v.MESSAGE_NOT_PLAIN}


@FAST
@given(NAMES)
def test_a_name_is_refused_with_a_known_text_or_kept_plain(value: str) -> None:
    name = _cleaned(v.clean_name, value, NAME_TEXTS)
    if name is not None:
        assert 0 < len(name) <= v.NAME_MAX
        assert name == name.strip()
        assert not _line_breaks(name)
        assert not ENCODED_WORD.search(name)


@FAST
@given(EMAILS)
def test_an_email_is_refused_as_invalid_or_normalised_to_one_plain_address(value: str) -> None:
    address = _cleaned(v.clean_email, value, {v.INVALID_EMAIL})
    if address is not None:
        assert not _line_breaks(address)
        local, _, domain = address.rpartition("@")
        assert local.isascii() and domain and "=?" not in address
        assert ascii_email(address).isascii()
        assert Address(addr_spec=ascii_email(address)).addr_spec == ascii_email(address)


@FAST
@given(PHONES)
def test_a_phone_is_refused_as_invalid_or_stored_as_e164(value: str) -> None:
    phone = _cleaned(v.clean_phone, value, {v.INVALID_NUMBER}, "AU")
    if phone is not None:
        assert phone.e164.startswith("+") and phone.e164[1:].isdigit()


@FAST
@given(st.one_of(HOSTILE, WITH_SURROGATES))
def test_a_message_is_refused_with_a_known_text_or_kept_with_plain_line_ends(value: str) -> None:
    message = _cleaned(v.clean_message, value, MESSAGE_TEXTS)
    if message is not None:
        assert 0 < len(message) <= v.MESSAGE_MAX
        assert not _line_breaks(message.replace("\n", "").replace("\t", ""))


@FAST
@given(st.one_of(HOSTILE, WITH_SURROGATES))
def test_a_page_url_is_dropped_or_kept_as_one_plain_http_url(value: str) -> None:
    url = v.clean_page_url("https://clinic.example/" + value)
    if url is not None:
        assert url.startswith("https://clinic.example/") and not _line_breaks(url)


@pytest.fixture(scope="module")
def mail_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """An app to build emails in; it never connects to a mail server."""
    database = tmp_path_factory.mktemp("properties") / "enquiries.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SERVICE_ENV", "testing")
        app = create_app(
            {
                "SECRET_KEY": "test-secret-key",
                "DATABASE_URL": f"sqlite:///{database}",
                "AUTO_MIGRATE": True,
                "MAIL_SERVER": "127.0.0.1",
                "CLINIC_INBOX": INBOX,
                "MAIL_DEFAULT_SENDER": SENDER,
                "DELIVERY_WORKER": "external",
                "CLINIC_TIMEZONE": "Australia/Sydney",
            }
        )
    yield app
    app.extensions["store"].engine.dispose()


def _enquiry(name: str, address: str, phone: str, message: str, page: str | None) -> Enquiry:
    enquiry_id = uuid.uuid4().hex
    return Enquiry(
        id=enquiry_id,
        created_at=datetime.now(UTC),
        name=name,
        email=address,
        phone=phone,
        message=message,
        page_url=page,
        message_id=f"<enquiry-{enquiry_id}@clinic.example>",
    )


def _assert_lines_are_smtp_safe(raw: bytes) -> None:
    assert raw.endswith(b"\r\n")
    for line in raw[:-2].split(b"\r\n"):
        # A bare CR or LF is how SMTP smuggling and header injection start; 998 is SMTP's limit.
        assert b"\r" not in line and b"\n" not in line, line
        assert len(line) <= 998


def _assert_header_block_is_exact(raw: bytes) -> None:
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation of the header above
        names.append(line.split(b":", 1)[0].decode("ascii"))
    assert sorted(names) == sorted(HEADERS)


@MAIL
@given(
    name=NAMES,
    address=EMAILS,
    phone=PHONES,
    message=st.one_of(HOSTILE, WITH_SURROGATES, LONG_LINES),
    page=st.one_of(HOSTILE, HOSTILE.map("https://clinic.example/".__add__)),
)
def test_the_email_goes_to_the_inbox_only_with_no_header_a_visitor_controls(
    mail_app: Flask, name: str, address: str, phone: str, message: str, page: str
) -> None:
    # A refused value is replaced by a plain one, so every example still builds an email.
    name = _cleaned(v.clean_name, name, NAME_TEXTS) or "Jane Citizen"
    address = _cleaned(v.clean_email, address, {v.INVALID_EMAIL}) or "jane@example.com"
    number = _cleaned(v.clean_phone, phone, {v.INVALID_NUMBER}, "AU")
    e164 = number.e164 if number else "+61412345678"
    message = _cleaned(v.clean_message, message, MESSAGE_TEXTS) or "Hello"
    page_url = v.clean_page_url(page)

    with mail_app.app_context():
        built = build_message(_enquiry(name, address, e164, message, page_url))
        raw = built.as_bytes()
    assert built.send_to == {INBOX}
    _assert_lines_are_smtp_safe(raw)
    _assert_header_block_is_exact(raw)

    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert sorted(parsed.keys()) == sorted(HEADERS)
    assert str(parsed["To"]) == INBOX
    assert str(parsed["From"]) == SENDER
    assert str(parsed["Subject"]) == f"New enquiry from {name}"
    (reply_to,) = parsed["Reply-To"].addresses
    assert reply_to.addr_spec == ascii_email(address)
    # Long names travel as several encoded words; readers may differ on the space between them.
    assert _squeezed(reply_to.display_name) == _squeezed(name)
    assert not parsed.defects

    plain = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert message in plain.get_content().replace("\r\n", "\n")
    assert str(markupsafe.escape(message)) in html.get_content().replace("\r\n", "\n")
    if page_url is not None:
        assert f'href="{markupsafe.escape(page_url)}"' in html.get_content()
