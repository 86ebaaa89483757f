"""A python-tuf fetcher over a repository directory, for checks that need no server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from tuf.api import exceptions
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from ota_server.repository.store import FileRepository
from tests.helpers import image_home

BASE = "http://repo.invalid/"


class DirectoryFetcher(FetcherInterface):
    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = repo_dir

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = self.repo_dir / url.removeprefix(BASE)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise exceptions.DownloadHTTPError(f"{url} not found", 404) from None
        return iter([data])


def published_paths(home: Path) -> list[str]:
    """Every target path the committed metadata lists, in any role."""
    repo = FileRepository.load(image_home(home), datetime.now(UTC))
    return [path for targets in repo.all_targets().values() for path in targets.targets]


def verify_all(home: Path, work: Path) -> dict[str, int]:
    """As a fresh client trusting 1.root.json: refresh and download every published target."""
    repo_dir = home / "repo"
    shutil.rmtree(work, ignore_errors=True)
    (work / "md").mkdir(parents=True)
    (work / "t").mkdir()
    updater = Updater(
        str(work / "md"),
        BASE + "metadata/",
        str(work / "t"),
        BASE + "targets/",
        fetcher=DirectoryFetcher(repo_dir),
        bootstrap=(repo_dir / "metadata" / "1.root.json").read_bytes(),
    )
    updater.refresh()
    out = {}
    for name in published_paths(home):
        info = updater.get_targetinfo(name)
        assert info is not None, name
        out[name] = Path(updater.download_target(info)).stat().st_size
    return out
