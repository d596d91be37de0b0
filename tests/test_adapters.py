"""The adapters over libraries' private parts: each fails here first if its library changes."""

from __future__ import annotations

import functools
import inspect
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.message import Message as EmailMessage
from email.mime.text import MIMEText
from typing import Any

import flask_mail
import pytest
import sqlalchemy
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from hypothesis import given, settings
from hypothesis import strategies as st

from service.delivery import mime
from service.delivery.mime import EnquiryMessage
from service.intake.limits import drop_per_request_hooks, limiter
from service.store.models import Enquiry
from tests.support import AppFactory

FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def test_flask_limiter_hooks_every_request_with_methods_of_its_own() -> None:
    # What drop_per_request_hooks relies on (Flask-Limiter 4.1.1).
    app = Flask(__name__)
    app.config["RATELIMIT_STORAGE_URI"] = "memory://"
    extension = Limiter(get_remote_address, app=app)
    [before] = app.before_request_funcs[None]
    [after] = app.after_request_funcs[None]
    [teardown] = app.teardown_request_funcs[None]
    assert getattr(before, "__self__", None) is extension
    assert isinstance(after, functools.partial) and after.args == (extension,)
    assert getattr(teardown, "__self__", None) is extension
    drop_per_request_hooks(app, extension)
    assert app.before_request_funcs[None] == []
    assert app.after_request_funcs[None] == []
    assert app.teardown_request_funcs[None] == []


def test_the_service_runs_no_limiter_pass_around_its_requests(app: Flask) -> None:
    def limiters(hooks: list[Any]) -> list[Any]:
        return [
            hook
            for hook in hooks
            if limiter in (getattr(hook, "__self__", None), *getattr(hook, "args", ()))
        ]

    before = app.before_request_funcs[None]
    assert not limiters(before)
    assert len(before) == 3, before  # the request id, the Origin check, the body check
    assert not limiters(app.after_request_funcs[None])
    assert not limiters(app.teardown_request_funcs.get(None, []))


def test_flask_mail_builds_parts_and_the_message_where_enquiry_message_overrides_them(
    app: Flask,
) -> None:
    # What EnquiryMessage relies on (Flask-Mail 0.10.0): the two methods, their arguments,
    # and that the message is built through them.
    assert list(inspect.signature(flask_mail.Message._mimetext).parameters) == [
        "self",
        "text",
        "subtype",
    ]
    assert list(inspect.signature(flask_mail.Message._message).parameters) == ["self"]
    assert "self._mimetext(" in inspect.getsource(flask_mail.Message._message)
    message = EnquiryMessage(
        subject="Subject",
        recipients=["front-desk@clinic.example"],
        sender="forms@clinic.example",
        body="A line of text.",
        html="<p>A line of text.</p>",
    )
    with app.app_context():
        built = message._message()
    parts = [part for part in built.walk() if not part.is_multipart()]
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all(part["Content-Transfer-Encoding"] == "quoted-printable" for part in parts)
    assert isinstance(built, EmailMessage)
    assert built.get_boundary().startswith("==")
    # Each boundary is in its header as the email package's set_boundary writes it.
    for part in built.walk():
        if part.is_multipart():
            value, boundary = part["Content-Type"], part.get_boundary()
            assert boundary.startswith("==") and boundary.endswith("==")
            expected = EmailMessage()
            expected["Content-Type"] = part.get_content_type()
            expected.set_boundary(boundary)
            assert value == expected["Content-Type"]


def test_limits_memory_storage_sweeps_through_the_methods_swept_memory_storage_overrides() -> None:
    # What SweptMemoryStorage relies on (limits 5.8.0): a count schedules the sweep through
    # the private method it overrides, and the sweep is the private method it calls.
    from limits.storage import MemoryStorage

    from service.intake.limit_storage import SweptMemoryStorage

    assert "self.__schedule_expiry()" in inspect.getsource(MemoryStorage.incr)
    assert callable(MemoryStorage._MemoryStorage__expire_events)  # type: ignore[attr-defined]
    assert "_MemoryStorage__schedule_expiry" in vars(SweptMemoryStorage)


def test_flask_limiter_keeps_its_in_memory_fallback_where_use_for_fallback_replaces_it() -> None:
    # What use_for_fallback relies on (Flask-Limiter 4.1.1).
    from service.intake.limit_storage import SweptMemoryStorage, use_for_fallback

    app = Flask(__name__)
    app.config |= {
        "RATELIMIT_STORAGE_URI": "memory://",
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    }
    extension = Limiter(get_remote_address, app=app)
    assert type(extension._fallback_storage).__name__ in {"MemoryStorage", "SweptMemoryStorage"}
    use_for_fallback(extension, "fixed-window")
    assert isinstance(extension._fallback_storage, SweptMemoryStorage)
    assert extension._fallback_limiter.storage is extension._fallback_storage


def test_flask_mail_takes_its_message_ids_from_the_make_msgid_it_imported(app: Flask) -> None:
    # What look_up_the_host_once relies on (Flask-Mail 0.10.0): the constructor calls the
    # module's own make_msgid, so that replacing it there replaces it for every Message.
    assert "self.msgId: str = make_msgid()" in inspect.getsource(flask_mail.Message.__init__)
    assert flask_mail.make_msgid is mime._message_id  # the app's delivery set it


def test_message_ids_name_the_host_as_make_msgid_does_with_one_lookup(
    app: Flask, monkeypatch: Any
) -> None:
    lookups: list[str] = []

    def counted_getfqdn(name: str = "") -> str:
        lookups.append(name)
        return real_getfqdn(name)

    real_getfqdn = socket.getfqdn
    monkeypatch.setattr(socket, "getfqdn", counted_getfqdn)
    mime._host_name.cache_clear()
    with app.app_context():
        ids = [flask_mail.Message(subject="Alert", recipients=["a@b.example"]).msgId for _ in "abc"]
    assert len(lookups) == 1
    assert len(set(ids)) == 3
    # The standard library's form: <time.pid.random@host>, with the host's name as it gives it.
    host = real_getfqdn()
    assert all(re.fullmatch(rf"<\d+\.\d+\.\d+@{re.escape(host)}>", msg_id) for msg_id in ids)


def test_the_app_asks_once_whether_a_function_is_a_coroutine_and_never_caches_one(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ServiceFlask overrides Flask's ensure_sync, which Flask documents for overriding.
    asked: list[Any] = []
    flask_own = Flask.ensure_sync

    def counted(self: Flask, func: Any) -> Any:
        asked.append(func)
        return flask_own(self, func)

    monkeypatch.setattr(Flask, "ensure_sync", counted)

    def plain() -> str:
        return "plain"

    async def coroutine() -> str:
        return "coroutine"

    assert app.ensure_sync(plain) is plain and app.ensure_sync(plain) is plain
    assert asked == [plain]
    for _ in range(2):
        # Flask's own answer each time: here, that async views need its "async" extra.
        with pytest.raises(RuntimeError, match="async"):
            app.ensure_sync(coroutine)
    assert asked == [plain, coroutine, coroutine]
    assert app.test_client().get("/healthz").status_code == 200


@FAST
@given(
    text=st.text(st.characters(codec="utf-8"), max_size=300)
    | st.sampled_from(["", "=", "a" * 200, "trailing space \nline", "From the clinic\r\n.\r\n"]),
    subtype=st.sampled_from(["plain", "html"]),
)
def test_a_quoted_printable_part_is_the_bytes_mimetext_builds(text: str, subtype: str) -> None:
    # What quoted_printable_part replaces (Python 3.11's email package): the same headers in the
    # same order, the same encoded body, whatever the visitor wrote.
    built = mime.quoted_printable_part(text, subtype)
    expected = MIMEText(text, _subtype=subtype, _charset=_utf8_quoted_printable())
    assert built.as_bytes() == expected.as_bytes()
    assert built.items() == expected.items()
    assert built.get_payload(decode=True) == expected.get_payload(decode=True)
    charset, expected_charset = built.get_charset(), expected.get_charset()
    assert (str(charset), charset.body_encoding, charset.header_encoding) == (
        str(expected_charset),
        expected_charset.body_encoding,
        expected_charset.header_encoding,
    )


def _utf8_quoted_printable() -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = QP
    return charset


def test_flask_mail_encodes_addresses_through_the_sanitize_address_encode_once_replaces(
    app: Flask,
) -> None:
    # What encode_once relies on (Flask-Mail 0.10.0): the header addresses are encoded by the
    # module's sanitize_address, looked up at each call.
    source = inspect.getsource(flask_mail.Message._message)
    assert 'msg["From"] = sanitize_address(self.sender, encoding)' in source
    assert 'msg["Reply-To"] = sanitize_address(self.reply_to, encoding)' in source
    assert "sanitize_address(e, encoding)" in inspect.getsource(flask_mail.sanitize_addresses)
    assert flask_mail.sanitize_address is mime._encoded_or_sanitized  # the app's delivery set it


def test_only_the_settings_addresses_are_encoded_once_and_a_visitors_never_kept(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(sender: str | tuple[str, str], reply_to: tuple[str, str]) -> list[Any]:
        with app.app_context():
            built = EnquiryMessage(
                subject="New enquiry from Zoë",
                recipients=["front-desk@clinic.example"],
                sender=sender,
                reply_to=reply_to,
                body="Hello",
            )._message()
            confirmation = EnquiryMessage(
                subject="Thank you", recipients=["zoe@example.com"], sender=sender, body="Hi"
            )._message()
        return [built["From"], built["To"], built["Reply-To"], confirmation["To"]]

    patient = ("Zoë Citizen", "zoe@example.com")
    settings_sender = "Contact form <forms@clinic.example>"
    mime.encode_once(["Clínica Sur <forms@clínica.example>"])
    senders = [settings_sender, "Clínica Sur <forms@clínica.example>", ("Clinic", "a@b.example")]
    cached = [build(sender, patient) for sender in senders]
    # Flask-Mail's own function for every address: the headers are the same, encoded once or not.
    monkeypatch.setattr(flask_mail, "sanitize_address", mime._sanitize_address)
    assert cached == [build(sender, patient) for sender in senders]
    assert cached[0][0] == "=?utf-8?q?Contact_form?= <forms@clinic.example>"
    assert cached[0][2] == "=?utf-8?q?Zo=C3=AB_Citizen?= <zoe@example.com>"
    kept = {address for address, _encoding in mime._ENCODED}
    assert {settings_sender, "front-desk@clinic.example"} <= kept
    assert not any("zoe" in address.lower() for address in kept)


def test_a_settings_address_with_no_ascii_form_is_not_encoded_once_and_the_app_starts(
    make_app: AppFactory,
) -> None:
    # Its emails fail on it as they did before encode_once; the app, its CLI and its health
    # checks still start.
    sender = "Clinic <ü@clinic..example>"
    with pytest.raises(UnicodeError):
        mime._sanitize_address(sender, "utf-8")
    app = make_app(MAIL_DEFAULT_SENDER=sender)
    assert app.test_client().get("/healthz").status_code == 200
    assert (sender, "utf-8") not in mime._ENCODED
    assert ("front-desk@clinic.example", "utf-8") in mime._ENCODED


def test_a_detached_enquiry_reads_its_columns_in_a_process_that_built_none_before() -> None:
    # Enquiry.detached skips the constructor, which is where SQLAlchemy would otherwise set
    # up the mappers: models.py does so at import.
    script = (
        "from service.store.models import Enquiry\n"
        "enquiry = Enquiry.detached({'id': 'a' * 32, 'status': 'pending'})\n"
        "print(enquiry.id, enquiry.status, enquiry.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a" * 32, "pending", "None"]


def test_a_detached_enquiry_reads_every_column_as_the_constructor_sets_it() -> None:
    # What Enquiry.detached relies on (SQLAlchemy 2.1): an instance from the class manager,
    # its dict filled as the ORM's loading fills it, reads back like a constructed one.
    values = {column.name: f"value of {column.name}" for column in Enquiry.__table__.columns} | {
        "attempts": 2,
        "created_at": datetime(2026, 12, 3, tzinfo=UTC),
    }
    detached, constructed = Enquiry.detached(values), Enquiry(**values)
    for name in values:
        assert getattr(detached, name) == getattr(constructed, name) == values[name]
    partial = Enquiry.detached({"id": "a" * 32, "status": "pending"})
    assert (partial.id, partial.status, partial.name, partial.sent_at) == (
        "a" * 32,
        "pending",
        None,
        None,
    )
    assert sqlalchemy.inspect(detached).transient
