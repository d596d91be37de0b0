"""The README, the Dockerfile and CI agree with the code (no container engine runs here)."""

import os
import re
from pathlib import Path

from config import ENVIRONMENT_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_readme_opens_with_exactly_two_setup_commands_that_exist() -> None:
    commands = re.findall(r"```sh\n(.+?)\n```", README.split("## ")[0], re.S)
    assert commands == ["./scripts/serve", "./scripts/test"]
    for command in commands:
        path = ROOT / command
        assert path.is_file() and os.access(path, os.X_OK)


def test_ci_runs_the_readme_test_command() -> None:
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_environment_setting() -> None:
    table = README.split("## Configuration")[1].split("\n## ")[0]
    documented = set(re.findall(r"`([A-Z][A-Z_]+)`", table))
    assert set(ENVIRONMENT_SETTINGS) <= documented, set(ENVIRONMENT_SETTINGS) - documented


def test_dockerfile_is_slim_non_root_and_checks_health() -> None:
    assert re.search(r"^FROM python:3\.\d+(\.\d+)?-slim", DOCKERFILE, re.M)
    assert re.search(r"pip install -r \S*requirements.txt", DOCKERFILE)
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.M)
    assert re.search(r'^CMD \["gunicorn".*"wsgi:app"\]', DOCKERFILE, re.M)
    assert "SERVICE_ENV=production" in DOCKERFILE
    for copied in ("config.py", "wsgi.py", "gunicorn.conf.py", "service"):
        assert copied in DOCKERFILE


def test_requirements_are_pinned() -> None:
    for name in ("requirements.txt", "requirements-test.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "-r")):
                assert "==" in line, f"{name}: {line} is not pinned"


def test_vendored_altcha_widget_records_version_and_licence() -> None:
    folder = ROOT / "service" / "web" / "static" / "vendor" / "altcha"
    assert re.search(r"altcha widget \d+\.\d+\.\d+", (folder / "VERSION").read_text())
    assert (
        "MIT" in (folder / "LICENSE.txt").read_text()
        or "Permission is hereby granted" in (folder / "LICENSE.txt").read_text()
    )
    assert (folder / "altcha.min.js").stat().st_size > 10_000


def test_compose_uses_the_settings_and_commands_the_readme_names() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"web", "worker", "postgres", "redis"} <= set(services)
    for name in ("web", "worker"):
        environment = services[name]["environment"]
        assert set(environment) <= set(ENVIRONMENT_SETTINGS) | {"SERVICE_ENV"}, name
        for required in ("SECRET_KEY", "CLINIC_INBOX", "MAIL_SERVER", "MAIL_DEFAULT_SENDER"):
            assert required in environment, (name, required)
        assert environment["SERVICE_ENV"] == "production"
        assert environment["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert environment["RATELIMIT_STORAGE_URI"].startswith("redis://redis:")
        assert environment["DELIVERY_WORKER"] == "external"
        assert "SEAL_PUBLIC_KEY" in environment
    # The web tier writes what it cannot read back: only the worker opens the sealed fields.
    assert "SEAL_PRIVATE_KEY" not in services["web"]["environment"]
    assert "SEAL_PRIVATE_KEY" in services["worker"]["environment"]
    table = README.split("## Configuration")[1].split("\n## ")[0]
    for variable in services["web"]["environment"]:
        assert f"`{variable}`" in table, f"{variable} is not in the README's table"
    for name in ("worker", "migrate"):
        command = " ".join(services[name]["command"])
        assert command in README, f"{name}'s command {command!r} is not in the README"
    assert "compose.yaml" in README and "docs/deploy.md" in README
    assert "gunicorn.conf.py" in DOCKERFILE and "AS build" in DOCKERFILE


def test_the_deployment_guide_covers_what_the_operator_needs() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for topic in (
        "nginx",
        "TRUSTED_PROXIES",
        "SPF",
        "DKIM",
        "DMARC",
        "Backups",
        "Retention",
        "Upgrading",
        "db upgrade",
        "Scaling out",
    ):
        assert topic in guide, topic
