"""Configuration: one variable picks the class; production refuses to start without its secrets."""

import pytest

from config import ConfigurationError, config_class, read_environment
from service import create_app

PRODUCTION = {
    "SERVICE_ENV": "production",
    "SECRET_KEY": "s3cret",
    "CLINIC_INBOX": "front-desk@clinic.example",
    "MAIL_SERVER": "127.0.0.1",
    "MAIL_DEFAULT_SENDER": "forms@clinic.example",
}


@pytest.mark.parametrize("missing", ["SECRET_KEY", "CLINIC_INBOX", "MAIL_SERVER", "MAIL_DEFAULT_SENDER"])
def test_production_without_a_required_setting_stops_naming_it(monkeypatch, tmp_path, missing) -> None:
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
    app = create_app()
    try:
        assert app.config["MAIL_PORT"] == 2525 and app.config["MAIL_USE_TLS"] is True
        assert app.config["SESSION_COOKIE_SECURE"] is True
        assert app.config["WTF_CSRF_ENABLED"] is not False
        assert app.test_client().get("/healthz").get_json()["status"] == "ok"
    finally:
        app.extensions["embedded_worker"].stop(5)
        app.extensions["store"].engine.dispose()


def test_unknown_environment_name_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="SERVICE_ENV"):
        config_class({"SERVICE_ENV": "staging"})


def test_environment_values_are_typed_and_bad_ones_named() -> None:
    assert read_environment({"MAIL_PORT": "587", "MAIL_USE_SSL": "yes", "MAIL_TIMEOUT": "2.5"}) == {
        "MAIL_PORT": 587, "MAIL_USE_SSL": True, "MAIL_TIMEOUT": 2.5,
    }
    with pytest.raises(ConfigurationError, match="MAIL_PORT"):
        read_environment({"MAIL_PORT": "smtp"})


def test_no_secret_has_a_default_in_committed_code() -> None:
    import config

    for cls in (config.Config, config.DevelopmentConfig, config.TestingConfig, config.ProductionConfig):
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
