"""``ota release``: publish release manifests and list what is published."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ota_server.cli.context import CliContext, pass_cli
from ota_server.cli.params import Text, file_path
from ota_server.cli.render import echo_json, echo_table, progress
from ota_server.repository.catalog import Catalog
from ota_server.repository.publish import (
    PublishResult,
    publish_release,
    publish_work,
)
from ota_server.repository.store import FileRepository


@click.group()
def release() -> None:
    """Releases (bundles of ECU images) in the Image repository."""


@release.command("publish")
@click.argument("manifest", type=file_path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@pass_cli
def release_publish(cli: CliContext, manifest: Path, as_json: bool, quiet: bool) -> None:
    """Validate MANIFEST, add its images as signed targets, and re-sign the repository.

    All or nothing: if anything fails, the repository stays exactly as it was.

    \b
    Example:
      ota release publish manifests/examples/body-control-1.1.0.toml
    """
    with progress(0, f"publishing {manifest.name}", enabled=not (quiet or as_json)) as advance:
        result = publish_release(
            cli.image,
            manifest,
            deltas=cli.config.deltas,
            progress=advance,
            on_plan=lambda plan: advance.set_total(publish_work(plan)),
        )
    if as_json:
        echo_json(_result_json(result))
        return
    plan = result.plan
    for image in plan.images:
        click.echo(
            f"  {image.path}  ({image.length} bytes, ecu {image.spec.ecu}, "
            f"release counter {image.custom.release_counter}, signed by {image.role})"
        )
    for delta, size in result.deltas:
        click.echo(f"  {delta.path}  ({size} bytes, {size / delta.image.length:.1%} of the image)")
    for delta, size in result.skipped:
        click.echo(
            f"  skipped {delta.path}: {size / delta.image.length:.0%} of the image "
            "is not small enough"
        )
    click.echo(f"published {plan.bundle} {plan.version}")


def _result_json(result: PublishResult) -> dict[str, object]:
    plan = result.plan
    return {
        "bundle": plan.bundle,
        "version": plan.version,
        "targets": [
            {"path": i.path, "length": i.length, "role": i.role, "custom": i.custom.to_dict()}
            for i in plan.images
        ],
        "deltas": [
            {"path": d.path, "length": size, "role": d.image.role, "custom": d.custom.to_dict()}
            for d, size in result.deltas
        ],
        "skipped_deltas": [{"path": d.path, "length": size} for d, size in result.skipped],
    }


@release.command("list")
@click.option("--bundle", type=Text(), help="Only this bundle.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def release_list(cli: CliContext, bundle: str | None, as_json: bool) -> None:
    """List published releases and their images, oldest first.

    \b
    Examples:
      ota release list
      ota release list --bundle body-control --json
    """
    repo = FileRepository.load(cli.image, datetime.now(UTC))
    releases = [
        r
        for r in Catalog.from_targets(repo.all_targets()).releases()
        if bundle is None or r.bundle == bundle
    ]
    if as_json:
        echo_json(
            [
                {
                    "bundle": r.bundle,
                    "version": r.version,
                    "images": [
                        {
                            "path": e.path,
                            "length": e.length,
                            "hashes": dict(e.hashes),
                            "role": e.role,
                            "custom": e.custom.to_dict(),
                        }
                        for e in r.images
                    ],
                    "deltas": [
                        {"path": e.path, "length": e.length, "custom": e.custom.to_dict()}
                        for e in r.deltas
                    ],
                }
                for r in releases
            ]
        )
        return
    rows = [
        [
            r.bundle,
            r.version,
            e.custom.ecu,
            ",".join(e.custom.hardware_ids),
            e.custom.release_counter,
            e.length,
            e.path,
        ]
        for r in releases
        for e in r.images
    ]
    echo_table(["BUNDLE", "VERSION", "ECU", "HARDWARE IDS", "COUNTER", "BYTES", "TARGET"], rows)
