from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url

from ota_server.fleet.db import upgrade
from tests.helpers import EXAMPLE_MANIFESTS, make_home
from tests.postgres import REQUIRE_ENV, Postgres, missing, start_postgres


@pytest.fixture(scope="session")
def _published_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("template"), *EXAMPLE_MANIFESTS)


@pytest.fixture
def published_home(tmp_path: Path, _published_template: Path) -> Path:
    """A server home with dev keys and all four example releases published."""
    home = tmp_path / "published"
    shutil.copytree(_published_template, home)
    return home


@pytest.fixture
def empty_home(tmp_path: Path) -> Path:
    """A server home with dev keys and a freshly initialised repository."""
    return make_home(tmp_path)


# -- the fleet database: every test that uses it runs on SQLite and on PostgreSQL -------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL 15 for the whole session (tests/postgres.py)."""
    reason = missing()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it")
        pytest.skip(reason)
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty fleet database of this test's own (no schema yet)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """The URL of a new fleet database of this test's own, migrated to the current schema."""
    asyncio.run(upgrade(make_url(empty_database_url)))
    return empty_database_url
