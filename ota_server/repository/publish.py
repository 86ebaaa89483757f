"""Publish a release: validate, copy images in, sign, commit — all or nothing.

Order matters for "nothing changes on failure": every check that can fail on operator input
(manifest, files, versions, counters, names, keys and passphrase) runs before the first byte is
copied; copies go to a staging area; signing happens in memory; the transaction then commits
with ``timestamp.json`` as the last write.

Each image also gets deltas from the newest published images of its hardware ids. Every delta
is applied with the vehicle's own applier and must rebuild the image byte for byte before it
is published, and it is only published if it is clearly smaller than the image.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from tuf.api.metadata import TargetFile

from ota_client.payload.format import PayloadError
from ota_client.strict import FormatError, printable, read_bounded
from ota_server.config import DeltaPolicy, RepositoryFiles
from ota_server.errors import InputError, RepositoryStateError
from ota_server.payload.generate import generate
from ota_server.payload.verify import verify_payload
from ota_server.repository.catalog import Catalog
from ota_server.repository.home import RepositoryHome
from ota_server.repository.manifest import MAX_MANIFEST_BYTES, ReleaseManifest, parse_manifest
from ota_server.repository.plan import PlannedDelta, ReleasePlan, plan_release
from ota_server.repository.store import writing
from ota_server.repository.transaction import Transaction

COPY_CHUNK = 1 << 20
MAX_IMAGE_BYTES = 64 << 30

Progress = Callable[[int], None]


def read_manifest(path: Path) -> tuple[ReleaseManifest, list[Path]]:
    """Parse the manifest and resolve its image files (relative to the manifest)."""
    where = printable(str(path))
    try:
        raw = read_bounded(path, MAX_MANIFEST_BYTES, f"manifest {where}")
    except FileNotFoundError:
        raise InputError(f"cannot read manifest {where}: it does not exist") from None
    except FormatError as e:
        raise InputError(str(e)) from None
    try:
        manifest = parse_manifest(raw)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    files = [path.parent / image.file for image in manifest.images]
    return manifest, files


def measure(files: list[Path], names: list[str]) -> list[int]:
    """Sizes of regular, readable, non-empty image files."""
    sizes = []
    for file, name in zip(files, names, strict=True):
        where = printable(str(file))
        try:
            st = os.stat(file)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"image {name}: {where} is not a regular file")
            os.close(os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError as e:
            raise InputError(f"image {name}: cannot read {where}: {e.strerror or e}") from None
        if st.st_size == 0:
            raise InputError(f"image {name}: {where} is empty")
        if st.st_size > MAX_IMAGE_BYTES:
            raise InputError(f"image {name}: {where} is larger than {MAX_IMAGE_BYTES} bytes")
        sizes.append(st.st_size)
    return sizes


def stage_copy(source: Path, staged: Path, progress: Progress | None) -> tuple[int, str]:
    """Copy ``source`` to ``staged`` durably, hashing on the way. Returns (length, sha256)."""
    digest = hashlib.sha256()
    length = 0
    with open(source, "rb") as src, open(staged, "wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            length += len(chunk)
            if progress is not None:
                progress(len(chunk))
        dst.flush()
        os.fsync(dst.fileno())
    return length, digest.hexdigest()


def consistent_target_file(files: RepositoryFiles, path: str, sha256: str) -> Path:
    """Where a target is stored: ``targets/<dir>/<sha256>.<basename>`` (consistent snapshots)."""
    pure = PurePosixPath(path)
    return files.targets.joinpath(*pure.parent.parts, f"{sha256}.{pure.name}")


def add_target_file(
    txn: Transaction,
    files: RepositoryFiles,
    path: str,
    source: Path,
    expected: int,
    progress: Progress | None,
) -> tuple[TargetFile, Path]:
    """Stage a copy of ``source`` as target ``path``; returns its TargetFile and staged copy."""
    staged = txn.new_staging_file(PurePosixPath(path).name)
    length, sha256 = stage_copy(source, staged, progress)
    if length != expected:
        raise InputError(f"{source} changed while it was being published")
    txn.add_file(consistent_target_file(files, path, sha256), staged)
    return TargetFile(length, {"sha256": sha256}, path), staged


@dataclass
class PublishResult:
    plan: ReleasePlan
    deltas: list[tuple[PlannedDelta, int]] = field(default_factory=list)  # published, bytes
    skipped: list[tuple[PlannedDelta, int]] = field(default_factory=list)  # not small enough


def _make_delta(
    txn: Transaction,
    files: RepositoryFiles,
    delta: PlannedDelta,
    image: Path,
    policy: DeltaPolicy,
    progress: Progress | None,
) -> tuple[TargetFile | None, int]:
    """Generate, verify and stage one delta; None if it is not clearly smaller than its image."""
    source = consistent_target_file(files, delta.source.path, delta.source.hashes["sha256"])
    staged = txn.new_staging_file(PurePosixPath(delta.path).name)
    with open(staged, "wb") as out:
        stats = generate(
            image,
            out,
            source,
            chunk_size=policy.chunk_size,
            jobs=policy.jobs,
            effort=policy.effort,
            progress=progress,
        )
        out.flush()
        os.fsync(out.fileno())
    if stats.payload_size > policy.max_ratio * delta.image.length:
        staged.unlink()
        return None, stats.payload_size
    try:
        verify_payload(staged, image, source)
    except PayloadError as e:
        raise RepositoryStateError(
            f"the delta {delta.path} does not rebuild its image ({e}); nothing was published"
        ) from e
    with open(staged, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    txn.add_file(consistent_target_file(files, delta.path, sha256), staged)
    return TargetFile(stats.payload_size, {"sha256": sha256}, delta.path), stats.payload_size


def publish_work(plan: ReleasePlan) -> int:
    """Bytes a publish reads through (copies plus delta generation), for progress bars."""
    return sum(i.length for i in plan.images) + sum(d.image.length for d in plan.deltas)


def publish_release(
    home: RepositoryHome,
    manifest_path: Path,
    *,
    deltas: DeltaPolicy | None = None,
    progress: Progress | None = None,
    on_plan: Callable[[ReleasePlan], None] | None = None,
    now: datetime | None = None,
) -> PublishResult:
    deltas = deltas or DeltaPolicy()
    manifest, files = read_manifest(manifest_path)
    sizes = measure(files, [image.ecu for image in manifest.images])
    with writing(home, now=now) as (repo, txn):
        catalog = Catalog.from_targets(repo.all_targets())
        plan = plan_release(
            manifest, sizes, catalog, repo.role_for_path, delta_sources=deltas.sources
        )
        for role in [*plan.roles, "snapshot", "timestamp"]:
            repo.require_signing(role)
        if on_plan is not None:
            on_plan(plan)
        result = PublishResult(plan)
        added: dict[str, list[TargetFile]] = {}
        staged: dict[str, Path] = {}
        for image, file in zip(plan.images, files, strict=True):
            target, staged[image.path] = add_target_file(
                txn, home.files, image.path, file, image.length, progress
            )
            target.unrecognized_fields["custom"] = image.custom.to_dict()
            added.setdefault(image.role, []).append(target)
        for delta in plan.deltas:
            made, size = _make_delta(
                txn, home.files, delta, staged[delta.image.path], deltas, progress
            )
            if made is None:
                result.skipped.append((delta, size))
                continue
            made.unrecognized_fields["custom"] = delta.custom.to_dict()
            added.setdefault(delta.image.role, []).append(made)
            result.deltas.append((delta, size))
        for role, targets in added.items():
            with repo.edit_targets(role) as signed:
                for target in targets:
                    signed.targets[target.path] = target
        repo.do_snapshot()
        repo.do_timestamp()
    return result
