from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import EXAMPLE_MANIFESTS, make_home


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
