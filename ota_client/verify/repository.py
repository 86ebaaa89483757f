"""A verified view of one TUF repository (Image or Director), over python-tuf's ``Updater``.

python-tuf checks the TUF chain (root rotation, expiry, rollback, mix-and-match, lengths and
hashes); this wrapper adds what Uptane needs on top: target names that are safe to write,
custom fields parsed by the shared schema, and the client's error family — python-tuf's own
exceptions never escape, from the constructor (a damaged trust root) included. Uptane's
Director/Image match runs over two of these (``verify.uptane``, ``verify.director``).
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.api.serialization import DeserializationError
from tuf.ngclient import Updater, UpdaterConfig

from ota_client.errors import (
    BadDataError,
    ConfigError,
    DeviceError,
    SecurityError,
    TransportError,
)
from ota_client.fetch.transport import Transport
from ota_client.fetch.tuf_fetcher import TransportFetcher
from ota_client.metadata import MetadataFormatError, TargetCustom, check_target_path
from ota_client.strict import FormatError, read_bounded

MAX_ROOT = 512 << 10
CONFIG = UpdaterConfig(max_root_rotations=64)


@dataclass(frozen=True)
class VerifiedTarget:
    info: TargetFile
    custom: TargetCustom

    @property
    def sha256(self) -> str:
        return self.info.hashes["sha256"]


def read_trust_root(path: Path) -> bytes:
    """The vehicle's built-in root metadata, read with a cap."""
    try:
        return read_bounded(path, MAX_ROOT, f"trust root {path}")
    except FileNotFoundError:
        raise ConfigError(f"cannot read the trust root {path}: no such file") from None
    except FormatError as e:
        raise ConfigError(str(e)) from None


class TufRepository:
    def __init__(
        self,
        base_url: str,
        cache_dir: Path,
        trusted_root: bytes,
        transport: Transport,
        config: UpdaterConfig = CONFIG,
    ) -> None:
        self.config = config
        base = self.base = base_url.rstrip("/")
        check_trust_root(trusted_root)  # before anything is written
        self.metadata_dir = cache_dir / "metadata"
        try:
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create {self.metadata_dir}: {e.strerror}") from None
        _prune_cache(self.metadata_dir)
        with _translated("the trust root"):
            try:
                self._updater = Updater(
                    metadata_dir=str(self.metadata_dir),
                    metadata_base_url=f"{base}/metadata/",
                    target_base_url=f"{base}/targets/",
                    fetcher=TransportFetcher(transport, self.metadata_dir),
                    config=config,
                    bootstrap=trusted_root,
                )
            except (DeserializationError, ValueError, TypeError, KeyError) as e:
                raise ConfigError(f"the trust root is not valid root metadata: {e}") from None

    def refresh(self) -> None:
        with _translated("refresh"):
            self._updater.refresh()

    def target(self, path: str) -> VerifiedTarget:
        found = self.lookup(path)
        if found is None:
            raise SecurityError(f"{path} is not in the repository")
        return found

    def lookup(self, path: str) -> VerifiedTarget | None:
        """The target of exactly this name, through the delegations; None if it has none."""
        try:
            check_target_path(path)
        except MetadataFormatError as e:
            raise BadDataError(str(e)) from None
        with _translated(path):
            info = self._updater.get_targetinfo(path)
        return None if info is None else _verified(info)

    def all_targets(self) -> list[VerifiedTarget]:
        """Every target of every role that follows the contract, from verified metadata only.

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
            for info in self._trusted(role).targets.values():
                try:
                    out.append(_verified(info))
                except BadDataError:
                    continue  # not one of ours: never install what we cannot read
        return out

    def _trusted(self, role: str) -> Targets:
        path = self.metadata_dir / f"{quote(role, safe='')}.json"
        try:
            md = Metadata[Targets].from_bytes(read_bounded(path, self.config.targets_max_length))
        except (OSError, FormatError, DeserializationError) as e:
            raise BadDataError(f"trusted metadata for {role} is unreadable: {e}") from None
        if not isinstance(md.signed, Targets):
            raise BadDataError(f"{path} is not targets metadata")
        return md.signed

    def target_url(self, info: TargetFile) -> str:
        """Where a target is served (consistent snapshots: the hash prefixes the name)."""
        directory, _, name = info.path.rpartition("/")
        prefix = f"{directory}/" if directory else ""
        return f"{self.base}/targets/{prefix}{info.hashes['sha256']}.{name}"


def check_trust_root(data: bytes) -> None:
    """Refuse a trust root that is not root metadata signed by its own threshold."""
    try:
        md = Metadata[Root].from_bytes(data)
        if not isinstance(md.signed, Root):
            raise ValueError(f"it is {md.signed.type} metadata")
        md.verify_delegate(Root.type, md)
    except (DeserializationError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"the trust root is not valid root metadata: {str(e)[:200]}") from None
    except tuf_errors.RepositoryError as e:
        raise ConfigError(f"the trust root does not verify: {str(e)[:200]}") from None


def _prune_cache(directory: Path, *, top: bool = True) -> None:
    """python-tuf reads its cached metadata whole: drop any cached file that is not a regular
    file of a sane size (a damaged cache is downloaded again, never trusted). Its one folder
    (``root_history``) is pruned the same way."""
    cap = max(CONFIG.targets_max_length, CONFIG.root_max_length)
    for entry in directory.iterdir():
        try:
            st = entry.lstat()
            if stat.S_ISDIR(st.st_mode) and top and entry.name == "root_history":
                _prune_cache(entry, top=False)
            elif stat.S_ISDIR(st.st_mode):
                shutil.rmtree(entry)
            elif not stat.S_ISREG(st.st_mode) or st.st_size > cap:
                entry.unlink()
        except OSError as e:
            raise DeviceError(f"cannot clean the metadata cache {entry}: {e.strerror}") from None


def _verified(info: TargetFile) -> VerifiedTarget:
    try:
        check_target_path(info.path)
        custom = TargetCustom.from_dict(info.custom)
    except MetadataFormatError as e:
        raise BadDataError(f"{info.path[:100]}: {e}") from None
    if "sha256" not in info.hashes:
        raise BadDataError(f"{info.path}: no sha256 hash")
    return VerifiedTarget(info, custom)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map python-tuf's exceptions onto the client's family."""
    try:
        yield
    except tuf_errors.DownloadError as e:
        raise TransportError(f"{what}: {e}") from None
    except tuf_errors.RepositoryError as e:
        raise SecurityError(f"{what}: {type(e).__name__}: {e}") from None
