"""What the repository holds, read back from its signed targets metadata (pure).

Targets metadata is the one source of truth for releases: bundles, versions and release
counters are derived from the ``custom`` fields, so there is no second database to drift.
Targets without custom fields are someone else's and skipped; ours are checked like any input
(their paths and hashes name files on disk), and a damaged one is a ``RepositoryStateError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version
from tuf.api.metadata import Targets

from ota_client.metadata import MetadataFormatError, TargetCustom, check_target_path
from ota_client.metadata.fields import check_hashes, check_length
from ota_client.strict import printable, show
from ota_server.errors import RepositoryStateError


@dataclass(frozen=True)
class CatalogEntry:
    path: str
    role: str
    length: int
    hashes: Mapping[str, str]
    custom: TargetCustom


@dataclass(frozen=True)
class Release:
    bundle: str
    version: str
    images: tuple[CatalogEntry, ...]  # full images only
    deltas: tuple[CatalogEntry, ...] = ()


@dataclass
class Catalog:
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    _counters: dict[str, int] | None = field(default=None, repr=False)

    @classmethod
    def from_targets(cls, roles: Mapping[str, Targets]) -> Catalog:
        catalog = cls()
        for role, targets in roles.items():
            for path, info in targets.targets.items():
                if "custom" not in info.unrecognized_fields:
                    continue  # not one of ours
                try:  # paths on disk are built from these: check them like any input
                    custom = TargetCustom.from_dict(info.custom)
                    check_target_path(path)
                    hashes = check_hashes(info.hashes)
                    if "sha256" not in hashes:
                        raise MetadataFormatError("no sha256")
                    length = check_length(info.length)
                except (MetadataFormatError, TypeError, ValueError) as e:
                    raise RepositoryStateError(
                        f"the {role} metadata is damaged at target {show(path)}: "
                        f"{printable(str(e), 120)}"
                    ) from None
                catalog.entries[path] = CatalogEntry(path, role, length, hashes, custom)
        return catalog

    def max_counter(self, hardware_id: str) -> int:
        if self._counters is None:
            self._counters = {}
            for e in self.entries.values():
                for hwid in e.custom.hardware_ids:
                    self._counters[hwid] = max(
                        self._counters.get(hwid, 0), e.custom.release_counter
                    )
        return self._counters.get(hardware_id, 0)

    def delta_sources(self, hardware_ids: tuple[str, ...], count: int) -> list[CatalogEntry]:
        """The ``count`` newest distinct full images for any of these hardware ids."""
        wanted = set(hardware_ids)
        candidates = sorted(
            (
                e
                for e in self.entries.values()
                if e.custom.kind == "full" and wanted & set(e.custom.hardware_ids)
            ),
            key=lambda e: (-e.custom.release_counter, e.path),
        )
        out: list[CatalogEntry] = []
        seen: set[str] = set()
        for entry in candidates:
            digest = entry.hashes.get("sha256", "")
            if digest not in seen and len(out) < count:
                seen.add(digest)
                out.append(entry)
        return out

    def versions(self, bundle: str) -> list[str]:
        return sorted(
            {e.custom.version for e in self.entries.values() if e.custom.bundle == bundle},
            key=_version_key,
        )

    def releases(self) -> list[Release]:
        groups: dict[tuple[str, str], list[CatalogEntry]] = {}
        for entry in self.entries.values():
            groups.setdefault((entry.custom.bundle, entry.custom.version), []).append(entry)
        out = []
        for (bundle, version), entries in groups.items():
            entries.sort(key=lambda e: (e.custom.ecu, e.path))
            out.append(
                Release(
                    bundle,
                    version,
                    tuple(e for e in entries if e.custom.kind == "full"),
                    tuple(e for e in entries if e.custom.kind == "delta"),
                )
            )
        out.sort(key=lambda r: (r.bundle, _version_key(r.version)))
        return out


def _version_key(text: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(text))
    except InvalidVersion:
        return (0, text)
