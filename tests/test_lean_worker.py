"""A web worker loads only what it uses: no Alembic at the schema's head, no unused redis-py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import VALID

ROOT = Path(__file__).resolve().parent.parent
# A worker's start-up and first requests, in a process of its own: this suite has loaded both.
SERVE = """
import json, sys
from service import create_app
app = create_app(json.loads(sys.argv[1]))
client = app.test_client()
client.get("/contact")
client.post("/api/enquiries", json=json.loads(sys.argv[2]))
print(json.dumps(sorted(sys.modules)))
"""


def last_line_of(script: str, *args: str, **env: str) -> str:
    """Run `script` in a fresh interpreter of the testing configuration; its last line."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "SERVICE_ENV": "testing", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def loaded_by_a_worker(settings: dict) -> set[str]:
    """The modules a worker holds after its start-up and its first requests."""
    valid = json.dumps({**VALID, "altcha": ""})
    return set(json.loads(last_line_of(SERVE, json.dumps(settings), valid)))


@pytest.fixture
def settings(app_config: dict) -> dict:
    """The suite's settings, on a store that is already at the schema's head."""
    from service import create_app

    create_app(app_config).extensions["store"].engine.dispose()  # migrates, as `db upgrade` would
    return app_config


def test_a_worker_without_redis_loads_neither_redis_nor_alembic(settings: dict) -> None:
    loaded = loaded_by_a_worker({**settings, "RATELIMIT_STORAGE_URI": "memory://"})
    packages = {name.split(".")[0] for name in loaded}
    assert "flask" in packages and "sqlalchemy" in packages
    assert "redis" not in packages
    assert "alembic" not in packages


def test_a_worker_loads_the_sql_dialect_of_its_store_only(settings: dict) -> None:
    loaded = loaded_by_a_worker(settings)
    ours, other = ("sqlite", "postgresql")
    if settings["DATABASE_URL"].startswith("postgresql"):
        ours, other = other, ours
    assert f"sqlalchemy.dialects.{ours}" in loaded
    assert f"sqlalchemy.dialects.{other}" not in loaded


def test_a_worker_with_redis_loads_it(settings: dict) -> None:
    loaded = loaded_by_a_worker({**settings, "REDIS_URL": "redis://127.0.0.1:6379/13"})
    assert "redis" in loaded


def test_the_entry_point_keeps_what_start_up_built_out_of_the_collectors_passes(
    settings: dict,
) -> None:
    script = "import gc, wsgi; print(gc.get_freeze_count(), len(gc.get_objects()))"
    line = last_line_of(
        script, DATABASE_URL=settings["DATABASE_URL"], SECRET_KEY=settings["SECRET_KEY"]
    )
    frozen, tracked = map(int, line.split())
    # The app's objects are frozen; what the collector still walks is what came after.
    assert frozen > 20_000
    assert tracked < frozen / 10
