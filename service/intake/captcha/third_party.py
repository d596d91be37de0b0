"""Third-party captchas (reCAPTCHA v2, hCaptcha, Turnstile): their widgets and server-side checks.

Each check POSTs the secret, the widget's token and the visitor's address to the provider's
siteverify address and fails closed: no answer in CAPTCHA_TIMEOUT, an HTTP error, an answer
that is not JSON, a refusal, or a hostname that is neither this service nor an allowed origin
all count as a failed captcha. The reason goes to the log; the visitor's data never does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import ipaddress
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlsplit
from urllib.request import Request, urlopen

from flask import current_app, request

from config import ConfigurationError

from . import replay

logger = logging.getLogger(__name__)

# Longer than any widget makes (Turnstile documents 2,048 characters): not worth a request.
TOKEN_MAX = 8192
REPLY_MAX = 64 * 1024
# Providers refuse a token after two to five minutes, and refuse it twice: remember it as long.
TOKEN_LIFETIME = timedelta(minutes=5)
USER_AGENT = "contact-form-service (captcha check)"

PASS = "pass"
FAIL = "fail"
SPENT = "fail as already spent"


@dataclass(frozen=True)
class Provider:
    """A captcha provider: its widget, where its answers are checked, and what CSP it needs."""

    name: str
    field: str  # the form field its widget posts, and the key in the JSON API
    widget_class: str
    script: str
    verify_url: str
    csp: Mapping[str, tuple[str, ...]]
    # The provider's documented test secrets, and what every check with one does.
    test_secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # hCaptcha checks the site key too, when it is sent: a key/secret mix-up then says so.
    sends_site_key: bool = False


GOOGLE = ("https://www.google.com/recaptcha/", "https://www.gstatic.com/recaptcha/")
HCAPTCHA = ("https://hcaptcha.com", "https://*.hcaptcha.com")
CLOUDFLARE = ("https://challenges.cloudflare.com",)

PROVIDERS: dict[str, Provider] = {
    "recaptcha": Provider(
        name="recaptcha",
        field="g-recaptcha-response",
        widget_class="g-recaptcha",
        script="https://www.google.com/recaptcha/api.js?hl=en",
        verify_url="https://www.google.com/recaptcha/api/siteverify",
        # Google's FAQ: the widget's script loads more from gstatic; its frames come from two hosts.
        csp={
            "script-src": GOOGLE,
            "frame-src": (
                "https://www.google.com/recaptcha/",
                "https://recaptcha.google.com/recaptcha/",
            ),
        },
        test_secrets={"6LeIxAcTAAAAAGG-vFI1TnRWxMZNFuojJ4WifJWe": PASS},
    ),
    "hcaptcha": Provider(
        name="hcaptcha",
        field="h-captcha-response",
        widget_class="h-captcha",
        # recaptchacompat=off: no second copy of the token under reCAPTCHA's field name.
        script="https://js.hcaptcha.com/1/api.js?hl=en&recaptchacompat=off",
        verify_url="https://api.hcaptcha.com/siteverify",
        # hCaptcha's documentation asks for all four, and for no narrower subdomains.
        csp={
            "script-src": HCAPTCHA,
            "frame-src": HCAPTCHA,
            "style-src": HCAPTCHA,
            "connect-src": HCAPTCHA,
        },
        test_secrets={"0x0000000000000000000000000000000000000000": PASS},
        sends_site_key=True,
    ),
    "turnstile": Provider(
        name="turnstile",
        field="cf-turnstile-response",
        widget_class="cf-turnstile",
        script="https://challenges.cloudflare.com/turnstile/v0/api.js",
        verify_url="https://challenges.cloudflare.com/turnstile/v0/siteverify",
        csp={"script-src": CLOUDFLARE, "frame-src": CLOUDFLARE},
        test_secrets={
            "1x0000000000000000000000000000000AA": PASS,
            "2x0000000000000000000000000000000AA": FAIL,
            "3x0000000000000000000000000000000AA": SPENT,
        },
    ),
}


class Unanswered(Exception):
    """The provider gave no usable answer; str(error) says why, without personal data."""


def current() -> Provider | None:
    """The configured third-party provider, or None when the captcha is ALTCHA."""
    return PROVIDERS.get(current_app.config["CAPTCHA_PROVIDER"])


def check_config(config: Mapping[str, Any]) -> None:
    """Stop start-up on an unknown provider, a missing key or an unusable verify address."""
    name = config["CAPTCHA_PROVIDER"]
    provider = PROVIDERS.get(name)
    if provider is None:
        raise ConfigurationError(
            f"CAPTCHA_PROVIDER must be altcha, {', '.join(PROVIDERS)}, not {name!r}."
        )
    for setting in ("CAPTCHA_SITE_KEY", "CAPTCHA_SECRET_KEY"):
        if not config.get(setting):
            raise ConfigurationError(
                f"{setting} is not set: CAPTCHA_PROVIDER={name} needs the site key and the "
                f"secret key from the provider's dashboard; set the {setting} environment variable."
            )
    url = config.get("CAPTCHA_VERIFY_URL") or provider.verify_url
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(f"CAPTCHA_VERIFY_URL must be an http(s) address, not {url!r}.")
    if not config.get("CAPTCHA_TIMEOUT") or config["CAPTCHA_TIMEOUT"] <= 0:
        raise ConfigurationError("CAPTCHA_TIMEOUT must be a number of seconds above 0.")


def warn_about_weak_settings(config: Mapping[str, Any]) -> None:
    """Log a WARNING at start-up when the provider's settings leave the form unprotected."""
    provider = PROVIDERS.get(config["CAPTCHA_PROVIDER"])
    if provider is None:
        return
    outcome = provider.test_secrets.get(config["CAPTCHA_SECRET_KEY"])
    if outcome is not None:
        logger.warning(
            "CAPTCHA_SECRET_KEY is %s's test secret: every captcha will %s. "
            "Use it only for testing, never on the clinic's site.",
            provider.name,
            outcome,
        )
    parts = urlsplit(config.get("CAPTCHA_VERIFY_URL") or provider.verify_url)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        logger.warning("CAPTCHA_VERIFY_URL is not HTTPS: the captcha secret key travels in clear")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def verify(token: str | None) -> replay.Solution | None:
    """Ask the provider if the widget's token is good and unused; None (reason logged) if not."""
    provider = PROVIDERS[current_app.config["CAPTCHA_PROVIDER"]]
    if not token:
        logger.info("%s captcha refused: no %s in the submission", provider.name, provider.field)
        return None
    if len(token) > TOKEN_MAX:
        logger.warning("%s captcha refused: the token is too long to be real", provider.name)
        return None
    if not _is_text(token):
        # JSON may carry a lone surrogate ("\ud800"): no widget makes one, and it cannot be
        # sent on to the provider.
        logger.warning("%s captcha refused: the token is not valid text", provider.name)
        return None
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    solution = replay.Solution(
        key=f"{provider.name}:{digest}", expires_at=datetime.now(UTC) + TOKEN_LIFETIME
    )
    if replay.seen(solution):
        logger.warning("%s captcha refused: the token was used before", provider.name)
        return None
    reason = _refusal(provider, token)
    if reason is not None:
        logger.warning("%s captcha refused: %s", provider.name, reason)
        return None
    return solution


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refusal(provider: Provider, token: str) -> str | None:
    """Why the provider's answer is not a pass, or None if it is one."""
    config = current_app.config
    secret = config["CAPTCHA_SECRET_KEY"]
    fields = {"secret": secret, "response": token}
    if request.remote_addr:
        fields["remoteip"] = request.remote_addr
    if provider.sends_site_key:
        fields["sitekey"] = config["CAPTCHA_SITE_KEY"]
    try:
        answer = ask(config["CAPTCHA_VERIFY_URL"] or provider.verify_url, fields, config)
    except Unanswered as error:
        return str(error)
    success = answer.get("success")
    if not isinstance(success, bool):
        return "malformed reply"
    if not success:
        codes = _error_codes(answer.get("error-codes"))
        return f"error codes {', '.join(codes)}" if codes else "refused without error codes"
    hostname = answer.get("hostname")
    # The test secrets answer with a placeholder hostname, so there is nothing to compare.
    if secret in provider.test_secrets or hostname is None or hostname == "":
        return None
    if not isinstance(hostname, str):
        return "malformed reply"
    if hostname.lower().rstrip(".") not in own_hostnames():
        return f"solved on another site ({_printable(hostname)})"
    return None


def ask(url: str, fields: Mapping[str, str], config: Mapping[str, Any]) -> dict[str, Any]:
    """POST the fields form-encoded; return the JSON object answered, or raise Unanswered."""
    body = urlencode(fields).encode("utf-8", "surrogatepass")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    outgoing = Request(url, data=body, headers=headers, method="POST")
    try:
        with urlopen(outgoing, timeout=config["CAPTCHA_TIMEOUT"]) as reply:
            raw = reply.read(REPLY_MAX + 1)
    except HTTPError as error:
        error.close()
        raise Unanswered(f"HTTP {error.code}") from None
    except TimeoutError:
        raise Unanswered("timeout") from None
    except URLError as error:
        cause = error.reason if isinstance(error.reason, BaseException) else error
        if isinstance(cause, TimeoutError):
            raise Unanswered("timeout") from None
        raise Unanswered(f"unreachable ({type(cause).__name__})") from None
    except (OSError, http.client.HTTPException) as error:
        raise Unanswered(f"connection failed ({type(error).__name__})") from None
    if len(raw) > REPLY_MAX:
        raise Unanswered("malformed reply")
    try:
        answer = json.loads(raw)
    except ValueError:  # UnicodeDecodeError is one too
        raise Unanswered("malformed reply") from None
    if not isinstance(answer, dict):
        raise Unanswered("malformed reply")
    return answer


# Where a widget is solved on a developer's machine, when no SERVICE_URL is set (production
# cannot start without one when a third-party captcha is on).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def own_hostnames() -> set[str]:
    """The hostnames a widget may be solved on: SERVICE_URL's and the allowed origins'."""
    # Never the request's Host header: the client writes it, and would name its own site.
    config = current_app.config
    names = {urlsplit(origin).hostname for origin in config["ALLOWED_ORIGINS"]}
    if config["SERVICE_URL"]:
        names.add(urlsplit(config["SERVICE_URL"]).hostname)
    else:
        names |= LOOPBACK_NAMES
    return {name.lower().rstrip(".") for name in names if name}


def _error_codes(codes: Any) -> list[str]:
    if isinstance(codes, str):
        codes = [codes]
    if not isinstance(codes, list):
        return []
    return [_printable(code) for code in codes if isinstance(code, str)][:10]


def _printable(text: str) -> str:
    # The provider's text goes into the log: keep it to one short, plain line.
    return re.sub(r"[^A-Za-z0-9._:-]", "?", text)[:100]
