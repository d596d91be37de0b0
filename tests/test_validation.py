"""The field checks give the exact texts the clinic's form uses."""

import sys
import unicodedata

import pytest

from service.delivery.message import ascii_email
from service.intake import validation as v


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("jane@example.com", "jane@example.com"),
        ("  Jane@Example.COM ", "Jane@example.com"),
        ("j.o'neil+clinic@sub.example.com.au", "j.o'neil+clinic@sub.example.com.au"),
    ],
)
def test_valid_email_is_normalised(value: str, expected: str) -> None:
    assert v.clean_email(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "jane",
        "jane@",
        "@example.com",
        "jane@example",
        "jane@@example.com",
        "jane example@example.com",
        "jane@example.com\nBcc: x@evil.example",
        "=?UTF-8?Q?=0A?=Bcc:x@evil.example",
        "jane@example.com\u2028",
        "ja\x00ne@example.com",
        "jane@localhost",
        "jane@example.com\r\n",
        "jane@example.com\u0085",
        "jane@example.com\ud800",
        "jane\u202e@example.com",
        "jane@ex\u200dample.com",
        "jane@example.com, x@evil.example",
        "Jane <x@evil.example>",
        # Letters beyond ASCII before the @ need SMTPUTF8 all the way to the clinic's inbox.
        "jösé@example.com",
    ],
)
def test_invalid_email_says_invalid_email(value: str) -> None:
    with pytest.raises(v.FieldError, match="^Invalid Email$"):
        v.clean_email(value)


@pytest.mark.parametrize(
    ("value", "normalised", "in_headers"),
    [
        ("jane@example.com", "jane@example.com", "jane@example.com"),
        ("jane@Bücher.example", "jane@bücher.example", "jane@xn--bcher-kva.example"),
        # IDNA 2008, as browsers and mail servers use: not Python's IDNA 2003 "fass.de".
        ("jane@faß.de", "jane@faß.de", "jane@xn--fa-hia.de"),
        # A Cyrillic "а": accepted (it is a real domain name), but shown for what it is.
        ("jane@exаmple.com", "jane@exаmple.com", "jane@xn--exmple-4nf.com"),
    ],
)
def test_international_domains_are_kept_and_sent_as_idna(
    value: str, normalised: str, in_headers: str
) -> None:
    assert v.clean_email(value) == normalised
    assert ascii_email(normalised) == in_headers


@pytest.mark.parametrize(
    ("value", "region", "e164"),
    [
        ("0412 345 678", "AU", "+61412345678"),
        ("(02) 9876 5432", "AU", "+61298765432"),
        ("+61 412 345 678", "AU", "+61412345678"),
        ("+44 20 7946 0018", "AU", "+442079460018"),
        ("020 7946 0018", "GB", "+442079460018"),
        ("+1 650-253-0000", "AU", "+16502530000"),
    ],
)
def test_valid_phone_is_stored_as_e164(value: str, region: str, e164: str) -> None:
    assert v.clean_phone(value, region).e164 == e164


@pytest.mark.parametrize(
    "value",
    [
        "",
        "123",
        "0412 345",
        "0412 345 678 999",
        "not a number",
        "+61 1234",
        "0000 000 000",
        "+999 123 456 789",
        "0412\n345678",
        "0412 345 678\ud800",
        "0412 345 678\u2028",
        "1" * 50,
    ],
)
def test_invalid_phone_says_invalid_number(value: str) -> None:
    with pytest.raises(v.FieldError, match="^Invalid Number$"):
        v.clean_phone(value, "AU")


def test_possible_but_invalid_number_is_refused() -> None:
    # 05 is not an Australian area code: the right length (possible), but no such number (invalid).
    import phonenumbers

    number = phonenumbers.parse("0550 123 456", "AU")
    assert phonenumbers.is_possible_number(number)
    assert not phonenumbers.is_valid_number(number)
    with pytest.raises(v.FieldError, match="^Invalid Number$"):
        v.clean_phone("0550 123 456", "AU")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", v.NAME_REQUIRED),
        ("   ", v.NAME_REQUIRED),
        ("x" * 101, v.NAME_TOO_LONG),
        ("Jane\nBcc: x@evil.example", v.NAME_NOT_PLAIN),
        ("Jane\r", v.NAME_NOT_PLAIN),
        ("Jane\u2028Citizen", v.NAME_NOT_PLAIN),
        ("Jane\u2029", v.NAME_NOT_PLAIN),
        ("Ja\x00ne", v.NAME_NOT_PLAIN),
        ("Jane\u0085Bcc: x@evil.example", v.NAME_NOT_PLAIN),
        ("Jane\tCitizen", v.NAME_NOT_PLAIN),
        ("Jane\x0bCitizen", v.NAME_NOT_PLAIN),
        ("Jane\x1b[31m", v.NAME_NOT_PLAIN),
        ("Ja\ud800ne", v.NAME_NOT_PLAIN),
        ("Jane \u202eenilC", v.NAME_NOT_PLAIN),
        ("Jane \u2067Citizen\u2069", v.NAME_NOT_PLAIN),
        ("=?UTF-8?Q?=0A?=Bcc: x@evil.example", v.NAME_NOT_PLAIN),
        ("=?utf-8?b?SmFuZQpCY2M6IHhAZXZpbC5leGFtcGxl?=", v.NAME_NOT_PLAIN),
    ],
)
def test_bad_name_gets_a_clear_text(value: str, expected: str) -> None:
    with pytest.raises(v.FieldError, match=f"^{expected}$"):
        v.clean_name(value)


@pytest.mark.parametrize(
    "value",
    [
        "Jane Citizen",
        "Zoë O'Brien-Nguyễn",
        "x" * 100,
        "محمد\u200cرضا",
        "Jane <x@evil.example>, Bcc: y@evil.example",
    ],
)
def test_plain_names_are_kept(value: str) -> None:
    assert v.clean_name(f"  {value} ") == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", v.MESSAGE_REQUIRED),
        ("  \n ", v.MESSAGE_REQUIRED),
        ("x" * 5001, v.MESSAGE_TOO_LONG),
        ("bell\x07", v.MESSAGE_NOT_PLAIN),
        ("nul\x00", v.MESSAGE_NOT_PLAIN),
        ("next\u0085line", v.MESSAGE_NOT_PLAIN),
        ("half a pair \ud83d", v.MESSAGE_NOT_PLAIN),
    ],
)
def test_bad_message_gets_a_clear_text(value: str, expected: str) -> None:
    with pytest.raises(v.FieldError, match=f"^{expected}$"):
        v.clean_message(value)


def test_message_keeps_lines_and_normalises_line_ends() -> None:
    assert v.clean_message("one\r\ntwo\rthree\u2028four\n\tfive") == "one\ntwo\nthree\nfour\n\tfive"
    assert len(v.clean_message("x" * 5000)) == 5000


def test_message_keeps_dots_and_right_to_left_text_as_written() -> None:
    text = "one\r\n.\r\ntwo\n.\nthree \u202eevil"
    assert v.clean_message(text) == "one\n.\ntwo\n.\nthree \u202eevil"


def test_control_characters_are_exactly_unicodes_controls_line_breaks_and_surrogates() -> None:
    # The checks search with one character class; unicodedata is what that class stands for.
    refused = {"Cc", "Zl", "Zp", "Cs"}
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        control = unicodedata.category(char) in refused
        assert v._has_control(f"a{char}b") is control, hex(point)
        in_message = control and char not in "\n\t"
        assert v._has_control(f"a{char}b", v._CONTROL_IN_MESSAGE) is in_message, hex(point)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "https://clinic.example/articles/back-pain?x=1",
            "https://clinic.example/articles/back-pain?x=1",
        ),
        ("javascript:alert(1)", None),
        ("", None),
        (None, None),
        ("http://a.example/\nx", None),
        ("https://a.example/\ud800", None),
        ("ftp://clinic.example/", None),
        ("https://" + "a" * 2000, None),
    ],
)
def test_page_url_is_kept_only_when_plain(value: str | None, expected: str | None) -> None:
    assert v.clean_page_url(value) == expected
