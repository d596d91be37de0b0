"""Configuration classes, chosen by the SERVICE_ENV environment variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def _bool(value: str) -> bool:
    """Read a yes/no environment value."""
    return value.strip().lower() in {"1", "true", "yes", "on"}


# Every setting the environment may override, with the type it is read as.
ENVIRONMENT_SETTINGS: dict[str, type] = {
    "SECRET_KEY": str,
    "CLINIC_INBOX": str,
    "CLINIC_NAME": str,
    "CLINIC_TIMEZONE": str,
    "MAIL_SERVER": str,
    "MAIL_PORT": int,
    "MAIL_USE_TLS": bool,
    "MAIL_USE_SSL": bool,
    "MAIL_USERNAME": str,
    "MAIL_PASSWORD": str,
    "MAIL_DEFAULT_SENDER": str,
    "MAIL_TIMEOUT": float,
    "MAIL_TLS_CA_FILE": str,
    "DATABASE_URL": str,
    "AUTO_MIGRATE": bool,
    "DATABASE_TIMEOUT": float,
    "PHONE_DEFAULT_REGION": str,
    "CAPTCHA_PROVIDER": str,
    "CAPTCHA_SITE_KEY": str,
    "CAPTCHA_SECRET_KEY": str,
    "CAPTCHA_VERIFY_URL": str,
    "CAPTCHA_TIMEOUT": float,
    "FORM_MIN_FILL_SECONDS": float,
    "RATELIMIT_STORAGE_URI": str,
    "REDIS_URL": str,
    "RATELIMIT_PER_CLIENT": str,
    "RATELIMIT_GLOBAL": str,
    "RATELIMIT_CHALLENGE": str,
    "SERVICE_URL": str,
    "SEAL_PUBLIC_KEY": str,
    "SEAL_PRIVATE_KEY": str,
    "SEAL_AT_REST": bool,
    "NOTIFY_CONTENT": str,
    "ALERT_TO": str,
    "AUTORESPONDER": bool,
    "AUTORESPONDER_SUBJECT": str,
    "AUTORESPONDER_TEXT": str,
    "NOTIFY_MESSAGE_TO": str,
    "TRUSTED_PROXIES": int,
    "STUCK_AFTER": int,
    "METRICS_TOKEN": str,
    "WORKER_METRICS_PORT": int,
    "LOG_FORMAT": str,
    "LOG_STREAM": str,
    "ALTCHA_COST": int,
    "ALTCHA_DIFFICULTY": int,
    "ALTCHA_EXPIRES_SECONDS": int,
    "DELIVERY_WORKER": str,
    "OUTBOX_POLL_SECONDS": float,
    "OUTBOX_BATCH_SIZE": int,
    "OUTBOX_CONNECTIONS": int,
    "OUTBOX_LEASE_SECONDS": int,
    "OUTBOX_HEARTBEAT_SECONDS": float,
    "OUTBOX_RETRY_BASE_SECONDS": int,
    "OUTBOX_RETRY_MAX_SECONDS": int,
    "OUTBOX_GIVE_UP_SECONDS": int,
    "RETENTION_DAYS": int,
    "HELD_RETENTION_DAYS": int,
    "FAILED_RETENTION_DAYS": int,
    "HELD_MAX": int,
    "HELD_DIGEST": bool,
    "LOG_LEVEL": str,
    "ALLOWED_ORIGINS": str,
    "THEME_FONT": str,
    "THEME_TEXT": str,
    "THEME_BACKGROUND": str,
    "THEME_ACCENT": str,
    "THEME_ACCENT_TEXT": str,
    "THEME_ERROR": str,
    "THEME_BORDER": str,
    "THEME_RADIUS": str,
    "THEME_STYLESHEET": str,
}


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the settings present in the environment, converted to their types."""
    settings: dict[str, Any] = {}
    for name, kind in ENVIRONMENT_SETTINGS.items():
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        if kind is bool:
            settings[name] = _bool(raw)
        else:
            try:
                settings[name] = kind(raw)
            except ValueError:
                raise ConfigurationError(
                    f"{name} must be a {kind.__name__}, not {raw!r}."
                ) from None
    return settings


class ConfigurationError(RuntimeError):
    """Raised when the service cannot start with the configuration it was given."""


class Config:
    """Defaults shared by every environment; nothing secret lives here."""

    REQUIRED: tuple[str, ...] = ()
    NEEDS_SERVICE_URL = False  # with a third-party captcha (its hostname check)

    CLINIC_INBOX = ""
    CLINIC_NAME = "the clinic"
    CLINIC_TIMEZONE = "UTC"
    MAIL_SERVER = ""
    MAIL_PORT = 25
    MAIL_USE_TLS = False
    MAIL_USE_SSL = False
    MAIL_USERNAME: str | None = None
    MAIL_PASSWORD: str | None = None
    MAIL_DEFAULT_SENDER: str | None = None
    MAIL_TIMEOUT = 30.0
    MAIL_TLS_CA_FILE: str | None = None
    # Start a local mail catcher that saves each email as an .eml file when no MAIL_SERVER is set.
    MAIL_CATCHER = False

    DATABASE_URL: str | None = None  # None: an SQLite file in the instance folder
    AUTO_MIGRATE: bool | None = None  # None: migrate on start-up for SQLite only
    # No database statement (or wait for a lock) lasts longer than this, in seconds.
    DATABASE_TIMEOUT = 10.0

    PHONE_DEFAULT_REGION = "AU"
    CAPTCHA_PROVIDER = "altcha"  # or recaptcha, hcaptcha, turnstile
    CAPTCHA_SITE_KEY = ""
    CAPTCHA_SECRET_KEY = ""
    CAPTCHA_VERIFY_URL = ""  # empty: the provider's own siteverify address
    CAPTCHA_TIMEOUT = 5.0
    # A form sent sooner than this after it was shown was filled in by a robot.
    FORM_MIN_FILL_SECONDS = 3.0

    # memory:// counts per process; redis://host:6379/0 shares the counts between processes.
    RATELIMIT_STORAGE_URI = "memory://"
    REDIS_URL = ""  # the captcha replay store's Redis, if not RATELIMIT_STORAGE_URI's
    RATELIMIT_PER_CLIENT = "5 per minute;30 per hour"
    RATELIMIT_GLOBAL = "300 per hour"
    # Captcha challenges a client may fetch: a form needs one, or a few after errors.
    RATELIMIT_CHALLENGE = "30 per minute"
    # How many proxies in front of the service set X-Forwarded-For; 0 believes none.
    TRUSTED_PROXIES = 0
    # The widget's work: ALTCHA_COST iterations per attempt, and 16 ** ALTCHA_DIFFICULTY attempts
    # on average (300 x 4,096, about what 5,000 x 256 was). The service checks an answer with one
    # attempt's worth, so the work sits in the attempts, not in each of them.
    ALTCHA_COST = 300
    ALTCHA_DIFFICULTY = 3
    ALTCHA_EXPIRES_SECONDS = 600

    DELIVERY_WORKER = "embedded"
    OUTBOX_POLL_SECONDS = 5.0
    OUTBOX_BATCH_SIZE = 20
    # SMTP connections a `flask outbox work` process sends a batch over at once. One keeps the
    # promise of at most one duplicate after a crash (one message in flight); Exchange Online
    # takes at most three at a time per mailbox and refuses a fourth with 432.
    OUTBOX_CONNECTIONS = 1
    # A claim lasts this long unless its worker renews it, which it does every
    # OUTBOX_HEARTBEAT_SECONDS (at most a third of the lease) while it works.
    OUTBOX_LEASE_SECONDS = 60
    OUTBOX_HEARTBEAT_SECONDS = 10.0
    OUTBOX_RETRY_BASE_SECONDS = 30
    OUTBOX_RETRY_MAX_SECONDS = 3600
    OUTBOX_GIVE_UP_SECONDS = 5 * 24 * 3600
    RETENTION_DAYS = 30
    # Dead letters keep their personal data this long, for a person to forward or retry them.
    FAILED_RETENTION_DAYS = 30
    # Submissions a spam trap caught are held for a person, erased after this many days; at
    # most HELD_MAX are kept (the oldest go first), so a flood cannot fill the disk.
    HELD_RETENTION_DAYS = 14
    HELD_MAX = 1000
    # A daily email to CLINIC_INBOX listing what was held, with a link that releases each.
    HELD_DIGEST = True

    LOG_LEVEL = "INFO"
    LOG_FORMAT = "json"  # or text
    LOG_STREAM = "stderr"  # wsgi.py makes it stdout for the web service
    # /readyz fails when the oldest pending enquiry has waited longer than this (seconds).
    STUCK_AFTER = 15 * 60
    # An address that gets one email for a dead letter, a queue stuck past STUCK_AFTER, and its
    # recovery (at most one an hour for each); none by default.
    ALERT_TO = ""
    # /metrics answers only with "Authorization: Bearer <METRICS_TOKEN>"; unset, it is closed.
    METRICS_TOKEN = ""
    # `flask outbox work` serves its own /metrics (same token rule) on this port; 0: none.
    WORKER_METRICS_PORT = 0
    # Sites that may frame the form and call the API, besides the service itself.
    ALLOWED_ORIGINS = ""
    # Personal fields are stored sealed to SEAL_PUBLIC_KEY; only SEAL_PRIVATE_KEY (the worker's
    # and the operator's, comma-separated, the current key first) opens them.
    SEAL_AT_REST = True
    # "full": the clinic's email carries the message; "minimal": only who wrote and how to
    # reach them, the message going to NOTIFY_MESSAGE_TO (if set) or staying in the store.
    NOTIFY_CONTENT = "full"
    NOTIFY_MESSAGE_TO = ""
    # A confirmation to the patient: this fixed text (only {name} and {clinic} are filled in),
    # at most one per address a day, never for a held enquiry.
    AUTORESPONDER = False
    AUTORESPONDER_SUBJECT = "We have received your message"
    AUTORESPONDER_TEXT = (
        "Dear {name},\n\n"
        "Thank you for writing to {clinic}. We have received your message and will get back to "
        "you as soon as we can.\n\n"
        "This is an automatic reply. If your message is urgent, please call us."
    )
    SEAL_PUBLIC_KEY = ""
    SEAL_PRIVATE_KEY = ""
    # The service's public base URL (https://forms.clinic.example): its own origin for the page
    # an enquiry names and the third-party captcha's hostname, whatever Host a request carries.
    SERVICE_URL = ""
    # Lifetime of the signed token in each rendered form.
    WTF_CSRF_TIME_LIMIT = 6 * 3600
    MAX_CONTENT_LENGTH = 64 * 1024

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        """Stop start-up, naming the variable, when a required setting is missing."""
        for name in cls.REQUIRED:
            if not config.get(name):
                raise ConfigurationError(
                    f"{name} is not set: set the {name} environment variable "
                    "before starting the service."
                )
        if cls.NEEDS_SERVICE_URL and config.get("CAPTCHA_PROVIDER", "altcha") != "altcha":
            if not config.get("SERVICE_URL"):
                raise ConfigurationError(
                    "SERVICE_URL is not set: with CAPTCHA_PROVIDER="
                    f"{config['CAPTCHA_PROVIDER']} the service checks that each token was "
                    "solved on its own site, and only SERVICE_URL (never a request's Host "
                    "header) says what that is. Set it to the service's public address, "
                    "for example https://forms.clinic.example."
                )


class DevelopmentConfig(Config):
    """A laptop with nothing configured: SQLite, ALTCHA and a local mail catcher."""

    MAIL_CATCHER = True
    CLINIC_INBOX = "front-desk@clinic.example"
    MAIL_DEFAULT_SENDER = "Contact form <forms@clinic.example>"


class TestingConfig(Config):
    """The test suite: each test supplies its store and its SMTP server."""

    TESTING = True
    DELIVERY_WORKER = "external"
    CLINIC_INBOX = "front-desk@clinic.example"
    MAIL_DEFAULT_SENDER = "Contact form <forms@clinic.example>"
    MAIL_TIMEOUT = 5.0
    ALTCHA_COST = 50
    ALTCHA_DIFFICULTY = 2
    # Each test's worker would send it on its first pass; the digest's own tests switch it on.
    HELD_DIGEST = False
    # Most tests read the stored fields to check them; the sealing tests switch it on.
    SEAL_AT_REST = False


class ProductionConfig(Config):
    """A real deployment: secrets and the mail route must come from the environment."""

    REQUIRED = ("SECRET_KEY", "CLINIC_INBOX", "MAIL_SERVER", "MAIL_DEFAULT_SENDER")
    NEEDS_SERVICE_URL = True
    # The form sets no cookie today; should one ever be added, it must not travel over plain HTTP.
    SESSION_COOKIE_SECURE = True


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_class(environ: Mapping[str, str] = os.environ) -> type[Config]:
    """Pick the configuration class named by SERVICE_ENV (default: development)."""
    name = environ.get("SERVICE_ENV", "development").strip().lower() or "development"
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigurationError(
            f"SERVICE_ENV must be one of {', '.join(CONFIGS)}, not {name!r}."
        ) from None
