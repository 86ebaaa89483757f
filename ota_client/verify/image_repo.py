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
from urllib.parse import quote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.api.serialization import DeserializationError
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
        base = self.base = base_url.rstrip("/")
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

    def all_targets(self) -> list[VerifiedTarget]:
        """Every target of every role, from verified metadata only.

        python-tuf loads delegated roles lazily, for a path they cover; one lookup per
        delegation loads each, then the trusted copies it persisted are read back.
        """
        with _translated("listing targets"):
            self._updater.get_targetinfo("probe/probe")  # refreshes if not done yet
            roles = ["targets"]
            delegations = self._trusted("targets").delegations
            for delegated in (delegations.roles or {}).values() if delegations else ():
                for pattern in delegated.paths or ():
                    self._updater.get_targetinfo(pattern.replace("*", "probe"))
                roles.append(delegated.name)
        out: list[VerifiedTarget] = []
        for role in roles:
            for path, info in self._trusted(role).targets.items():
                try:
                    check_target_path(path)
                    out.append(VerifiedTarget(info, TargetCustom.from_dict(info.custom)))
                except MetadataFormatError:
                    continue  # not one of ours: never install what we cannot read
        return out

    def _trusted(self, role: str) -> Targets:
        path = self.metadata_dir / f"{quote(role, safe='')}.json"
        try:
            md = Metadata.from_file(str(path))
        except (OSError, DeserializationError) as e:
            raise VerificationError(f"trusted metadata for {role} is missing: {e}") from None
        if not isinstance(md.signed, Targets):
            raise VerificationError(f"{path} is not targets metadata")
        return md.signed

    def target_url(self, info: TargetFile) -> str:
        """Where a target is served (consistent snapshots: the hash prefixes the name)."""
        directory, _, name = info.path.rpartition("/")
        prefix = f"{directory}/" if directory else ""
        return f"{self.base}/targets/{prefix}{info.hashes['sha256']}.{name}"

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
