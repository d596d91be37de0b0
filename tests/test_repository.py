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
    assert "pip install -r requirements.txt" in DOCKERFILE
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
    folder = ROOT / "service" / "static" / "vendor" / "altcha"
    assert re.search(r"altcha widget \d+\.\d+\.\d+", (folder / "VERSION").read_text())
    assert (
        "MIT" in (folder / "LICENSE.txt").read_text()
        or "Permission is hereby granted" in (folder / "LICENSE.txt").read_text()
    )
    assert (folder / "altcha.min.js").stat().st_size > 10_000
