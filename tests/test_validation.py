"""The field checks give the exact texts the clinic's form uses."""

import pytest

from service import validation as v


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
    ],
)
def test_invalid_email_says_invalid_email(value: str) -> None:
    with pytest.raises(v.FieldError, match="^Invalid Email$"):
        v.clean_email(value)


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
        ("=?UTF-8?Q?=0A?=Bcc: x@evil.example", v.NAME_NOT_PLAIN),
    ],
)
def test_bad_name_gets_a_clear_text(value: str, expected: str) -> None:
    with pytest.raises(v.FieldError, match=f"^{expected}$"):
        v.clean_name(value)


@pytest.mark.parametrize(
    "value", ["Jane Citizen", "Zoë O'Brien-Nguyễn", "x" * 100, "محمد\u200cرضا"]
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
    ],
)
def test_bad_message_gets_a_clear_text(value: str, expected: str) -> None:
    with pytest.raises(v.FieldError, match=f"^{expected}$"):
        v.clean_message(value)


def test_message_keeps_lines_and_normalises_line_ends() -> None:
    assert v.clean_message("one\r\ntwo\rthree\u2028four\n\tfive") == "one\ntwo\nthree\nfour\n\tfive"
    assert len(v.clean_message("x" * 5000)) == 5000


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
        ("ftp://clinic.example/", None),
        ("https://" + "a" * 2000, None),
    ],
)
def test_page_url_is_kept_only_when_plain(value: str | None, expected: str | None) -> None:
    assert v.clean_page_url(value) == expected
