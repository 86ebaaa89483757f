"""Decide what a release adds to the repository, before anything is written (pure).

``plan_release`` checks a parsed manifest against the catalog — newer version, release
counters that only go up, no clashing target names — and returns the targets to add, each with
its path, signing role and custom fields. The shell then copies files and signs; the plan
never changes after that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from ota_client.metadata import MetadataFormatError, SourceInfo, TargetCustom, check_target_path
from ota_client.metadata.fields import MAX_RELEASE_COUNTER
from ota_server.errors import InputError
from ota_server.repository.catalog import Catalog, CatalogEntry
from ota_server.repository.manifest import ImageSpec, ReleaseManifest, parse_version


@dataclass(frozen=True)
class PlannedImage:
    spec: ImageSpec
    path: str  # target path
    role: str  # targets role that signs it
    length: int
    custom: TargetCustom


@dataclass(frozen=True)
class PlannedDelta:
    image: PlannedImage
    source: CatalogEntry  # the published image it applies to
    path: str

    @property
    def custom(self) -> TargetCustom:
        return replace(
            self.image.custom,
            kind="delta",
            image=self.image.path,
            source=SourceInfo(self.source.length, dict(self.source.hashes)),
        )


@dataclass(frozen=True)
class ReleasePlan:
    bundle: str
    version: str
    images: tuple[PlannedImage, ...]
    deltas: tuple[PlannedDelta, ...] = ()

    @property
    def roles(self) -> list[str]:
        return sorted({image.role for image in self.images})


def target_path(spec: ImageSpec, version: str) -> str:
    """``<first hardware id>/<name>-<version><suffix>``: delegations match on the hardware id."""
    path = f"{spec.hardware_ids[0]}/{spec.name}-{version}{spec.suffix}"
    try:
        return check_target_path(path)
    except MetadataFormatError as e:
        raise InputError(f"image {spec.ecu}: {e}") from None


def delta_path(image_path: str, source_path: str) -> str:
    """``<image path>.from-<source file name>.delta``, next to the image it builds."""
    path = f"{image_path}.from-{PurePosixPath(source_path).name}.delta"
    try:
        return check_target_path(path)
    except MetadataFormatError:
        raise InputError(
            f"the delta name for {image_path} from {source_path} is too long: "
            "shorten the image name"
        ) from None


def plan_release(
    manifest: ReleaseManifest,
    lengths: Sequence[int],
    catalog: Catalog,
    route: Callable[[str], str],
    *,
    delta_sources: int = 0,
) -> ReleasePlan:
    """Validate ``manifest`` against what is published and lay out its targets.

    ``lengths`` are the image sizes in manifest order; ``route`` maps a target path to the
    name of the targets role that must sign it (top-level or a supplier delegation).
    """
    new_version = manifest.parsed_version
    for published in catalog.versions(manifest.bundle):
        if parse_version(published) >= new_version:
            raise InputError(
                f"version {manifest.version} of bundle {manifest.bundle!r} is not newer than "
                f"the published {published}"
            )
    planned: list[PlannedImage] = []
    paths: set[str] = set()
    for spec, length in zip(manifest.images, lengths, strict=True):
        path = target_path(spec, manifest.version)
        if path in paths or path in catalog.entries:
            raise InputError(f"target {path} already exists: rename the image (name = ...)")
        paths.add(path)
        floor = max(catalog.max_counter(h) for h in spec.hardware_ids)
        if spec.release_counter is None and floor >= MAX_RELEASE_COUNTER:
            raise InputError(
                f"image {spec.ecu}: hardware ids {', '.join(spec.hardware_ids)} are at the "
                f"largest release counter ({MAX_RELEASE_COUNTER}): no later release can follow"
            )
        counter = floor + 1 if spec.release_counter is None else spec.release_counter
        if counter <= floor:
            raise InputError(
                f"image {spec.ecu}: release_counter {counter} goes backwards "
                f"(hardware ids {', '.join(spec.hardware_ids)} are already at {floor})"
            )
        custom = TargetCustom(
            hardware_ids=spec.hardware_ids,
            release_counter=counter,
            version=manifest.version,
            bundle=manifest.bundle,
            ecu=spec.ecu,
        )
        planned.append(PlannedImage(spec, path, route(path), length, custom))
    deltas = [
        PlannedDelta(image, source, delta_path(image.path, source.path))
        for image in planned
        for source in catalog.delta_sources(image.custom.hardware_ids, delta_sources)
    ]
    return ReleasePlan(manifest.bundle, manifest.version, tuple(planned), tuple(deltas))
