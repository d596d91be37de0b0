"""Configuration: one variable picks the class; production refuses to start without its secrets."""

import pytest

from config import ConfigurationError, config_class, read_environment
from service import create_app
from tests.support import PRODUCTION as PRODUCTION_SETTINGS
from tests.support import SEAL_KEYS

PRODUCTION = {**PRODUCTION_SETTINGS, **SEAL_KEYS}


@pytest.mark.parametrize(
    "missing", ["SECRET_KEY", "CLINIC_INBOX", "MAIL_SERVER", "MAIL_DEFAULT_SENDER"]
)
def test_production_without_a_required_setting_stops_naming_it(
    monkeypatch, tmp_path, missing
) -> None:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/x.sqlite3")
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigurationError, match=missing):
        create_app()


def test_production_starts_with_its_settings(monkeypatch, tmp_path) -> None:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/x.sqlite3")
    monkeypatch.setenv("MAIL_PORT", "2525")
    monkeypatch.setenv("MAIL_USE_TLS", "true")
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://www.clinic.example/, https://CLINIC.example:443")
    app = create_app()
    try:
        assert app.config["MAIL_PORT"] == 2525 and app.config["MAIL_USE_TLS"] is True
        assert app.config["SESSION_COOKIE_SECURE"] is True
        assert app.config["ALLOWED_ORIGINS"] == (
            "https://www.clinic.example",
            "https://clinic.example",
        )
        assert app.test_client().get("/healthz").get_json()["status"] == "ok"
    finally:
        app.extensions["delivery"].embedded.stop(5)
        app.extensions["store"].engine.dispose()


def test_production_with_a_third_party_captcha_needs_service_url(monkeypatch, tmp_path) -> None:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/x.sqlite3")
    monkeypatch.setenv("CAPTCHA_PROVIDER", "turnstile")
    monkeypatch.setenv("CAPTCHA_SITE_KEY", "site")
    monkeypatch.setenv("CAPTCHA_SECRET_KEY", "secret")
    with pytest.raises(ConfigurationError, match="SERVICE_URL is not set: with CAPTCHA_PROVIDER"):
        create_app()


def test_unknown_environment_name_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="SERVICE_ENV"):
        config_class({"SERVICE_ENV": "staging"})


def test_environment_values_are_typed_and_bad_ones_named() -> None:
    assert read_environment({"MAIL_PORT": "587", "MAIL_USE_SSL": "yes", "MAIL_TIMEOUT": "2.5"}) == {
        "MAIL_PORT": 587,
        "MAIL_USE_SSL": True,
        "MAIL_TIMEOUT": 2.5,
    }
    with pytest.raises(ConfigurationError, match="MAIL_PORT"):
        read_environment({"MAIL_PORT": "smtp"})


def test_no_secret_has_a_default_in_committed_code() -> None:
    import config

    for cls in (
        config.Config,
        config.DevelopmentConfig,
        config.TestingConfig,
        config.ProductionConfig,
    ):
        assert not getattr(cls, "SECRET_KEY", None)
        assert not getattr(cls, "MAIL_PASSWORD", None)


def test_development_generates_and_keeps_one_secret(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SERVICE_ENV", "development")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    settings = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3", "MAIL_SERVER": "127.0.0.1"}
    first, second = create_app(settings), create_app(settings)
    try:
        assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
        assert len(first.config["SECRET_KEY"]) == 64
    finally:
        first.extensions["store"].engine.dispose()
        second.extensions["store"].engine.dispose()


@pytest.mark.parametrize(
    "value",
    [
        "www.clinic.example",
        "https://clinic.example/contact",
        "ftp://clinic.example",
        "https://",
        "*",
    ],
)
def test_a_malformed_allowed_origin_stops_start_up(value: str, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SERVICE_ENV", "testing")
    with pytest.raises(ConfigurationError, match="ALLOWED_ORIGINS"):
        create_app(
            {
                "SECRET_KEY": "x",
                "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
                "ALLOWED_ORIGINS": value,
            }
        )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("THEME_ACCENT", "red; } body { display: none"),
        ("THEME_FONT", "x</style><script>"),
        ("THEME_RADIUS", "url(https://evil.example/x)"),
        ("THEME_STYLESHEET", "https://elsewhere.example/theme.css"),
    ],
)
def test_a_theme_value_that_could_escape_its_css_stops_start_up(
    setting: str, value: str, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("SERVICE_ENV", "testing")
    with pytest.raises(ConfigurationError, match=setting):
        create_app(
            {
                "SECRET_KEY": "x",
                "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
                "ALLOWED_ORIGINS": "https://www.clinic.example",
                setting: value,
            }
        )


def test_an_unknown_clinic_timezone_stops_start_up(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SERVICE_ENV", "testing")
    with pytest.raises(ConfigurationError, match="CLINIC_TIMEZONE"):
        create_app(
            {
                "SECRET_KEY": "x",
                "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
                "CLINIC_TIMEZONE": "Australia/Gotham",
            }
        )


@pytest.mark.parametrize(
    ("setting", "value"),
    [("OUTBOX_LEASE_SECONDS", "0"), ("OUTBOX_HEARTBEAT_SECONDS", "-1"), ("DATABASE_TIMEOUT", "0")],
)
def test_a_timing_of_zero_or_less_stops_start_up(
    setting: str, value: str, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("SERVICE_ENV", "testing")
    monkeypatch.setenv(setting, value)
    with pytest.raises(ConfigurationError, match=f"{setting} must be a number of seconds above 0"):
        create_app({"SECRET_KEY": "x", "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3"})
