"""A verified view of the Image repository, over python-tuf's ``Updater``.

python-tuf checks the TUF chain (root rotation, expiry, rollback, mix-and-match, lengths and
hashes); this wrapper adds what Uptane needs on top: target names that are safe to write,
custom fields parsed by the shared schema, and typed errors. The Director (a later issue)
adds the Director/Image match on top of two of these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from ota_client.metadata import MetadataFormatError, TargetCustom, check_target_path


class VerificationError(Exception):
    """Metadata or a target failed verification (bad data: never install, never retry blindly)."""


class TransportError(Exception):
    """The repository could not be reached or stopped answering (retry later)."""


@dataclass(frozen=True)
class VerifiedTarget:
    info: TargetFile
    custom: TargetCustom


class ImageRepository:
    def __init__(
        self,
        base_url: str,
        cache_dir: Path,
        trusted_root: bytes,
        *,
        fetcher: FetcherInterface | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        self.metadata_dir = cache_dir / "metadata"
        self.targets_dir = cache_dir / "targets"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self._updater = Updater(
            metadata_dir=str(self.metadata_dir),
            metadata_base_url=f"{base}/metadata/",
            target_base_url=f"{base}/targets/",
            target_dir=str(self.targets_dir),
            fetcher=fetcher,
            config=UpdaterConfig(max_root_rotations=64),
            bootstrap=trusted_root,
        )

    def refresh(self) -> None:
        with _translated("refresh"):
            self._updater.refresh()

    def target(self, path: str) -> VerifiedTarget:
        try:
            check_target_path(path)
        except MetadataFormatError as e:
            raise VerificationError(str(e)) from None
        with _translated(path):
            info = self._updater.get_targetinfo(path)
        if info is None:
            raise VerificationError(f"{path} is not in the repository")
        try:
            custom = TargetCustom.from_dict(info.custom)
        except MetadataFormatError as e:
            raise VerificationError(f"{path}: {e}") from None
        return VerifiedTarget(info, custom)

    def download(self, target: VerifiedTarget) -> Path:
        """Fetch a target (or reuse a verified cached copy); length and hashes are checked."""
        with _translated(target.info.path):
            cached = self._updater.find_cached_target(target.info)
            if cached is not None:
                return Path(cached)
            return Path(self._updater.download_target(target.info))


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map python-tuf's exceptions onto the two families callers act on."""
    try:
        yield
    except tuf_errors.DownloadError as e:
        raise TransportError(f"{what}: {e}") from e
    except tuf_errors.RepositoryError as e:
        raise VerificationError(f"{what}: {type(e).__name__}: {e}") from e
