"""``ota vehicle``: provision vehicles (inventory, keys, certificates, client.toml), list,
show and revoke them; ``ota assign`` / ``ota unassign``: what the Director gives a vehicle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from ota_client.atomic import fsync_dir, write_atomic
from ota_client.strict import FormatError, printable, read_bounded
from ota_server.cli.context import CliContext, pass_cli
from ota_server.cli.params import SafePath, Text, file_path
from ota_server.cli.render import echo_json, echo_table, progress
from ota_server.director import service
from ota_server.director.assign import EcuInventory, plan_assignment
from ota_server.errors import InputError
from ota_server.fleet import inventory
from ota_server.fleet.db import open_database, url_for
from ota_server.fleet.provision import (
    VehicleSpec,
    ecu_key,
    kit_files,
    parse_csv,
    parse_ecu,
    vehicle_spec,
)
from ota_server.repository.home import reading
from ota_server.repository.publish import consistent_target_file
from ota_server.repository.store import root_versions

MAX_CSV = 64 << 20


@contextlib.asynccontextmanager
async def fleet_session(cli: CliContext) -> AsyncIterator[AsyncSession]:
    """One transaction on the home's fleet database, committed if the block succeeds."""
    database = await open_database(url_for(cli.config))
    try:
        async with database.reaching(), database.sessions() as session, session.begin():
            yield session
    finally:
        await database.dispose()


def _latest_root(metadata: Path) -> bytes:
    versions = root_versions(metadata)
    if not versions:
        raise InputError("no repositories yet: run 'ota keys init' and 'ota repo init' first")
    path = metadata / f"{versions[-1]}.root.json"
    try:
        return read_bounded(path, 1 << 20, path.name)
    except (OSError, FormatError) as e:
        raise InputError(f"cannot read {printable(str(path))}: {e}") from None


@click.group()
def vehicle() -> None:
    """The fleet inventory: vehicles, their ECUs and their keys."""


@vehicle.command("provision")
@click.argument("vin", required=False, type=Text())
@click.option(
    "--ecu",
    "ecus",
    multiple=True,
    type=Text(),
    help="SERIAL:HARDWARE_ID[:primary], once per ECU (the first is the primary by default).",
)
@click.option(
    "--out",
    required=True,
    type=SafePath(file_okay=False, path_type=Path),
    help="Folder to write the vehicle kit to.",
)
@click.option(
    "--from-csv",
    "csv_file",
    type=file_path(),
    help="Provision many: rows vin,serial,hardware_id[,primary]; one kit per VIN under --out.",
)
@click.option(
    "--factory",
    type=Text(),
    help="BUNDLE@VERSION whose images are written into the simulated A slots.",
)
@click.option("--server", type=Text(), help="The URL vehicles use (default: from [serve]).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def provision(
    cli: CliContext,
    vin: str | None,
    ecus: tuple[str, ...],
    out: Path,
    csv_file: Path | None,
    factory: str | None,
    server: str | None,
    as_json: bool,
) -> None:
    """Register a vehicle and write everything it needs into --out.

    The kit: client.toml (runs as is on a simulated vehicle: simulated boot, file slots in
    slots/), both repositories' root metadata, one ed25519 key per ECU (keys/), the
    vehicle's TLS client certificate (CN = VIN) and the CA that signed it and the server.
    Edit the ECU sections of client.toml for real hardware.

    \b
    Examples:
      ota vehicle provision VIN0001 --ecu BCM-1:bcm-s32k:primary --ecu TCU-1:tcu-9150 --out car1
      ota vehicle provision --from-csv fleet.csv --out kits/
      ota vehicle provision VIN0002 --ecu BCM-2:bcm-s32k --factory body-control@1.0.0 --out car2
    """
    if csv_file is not None:
        if vin is not None or ecus:
            raise click.UsageError("give either VIN and --ecu, or --from-csv")
        try:
            text = read_bounded(csv_file, MAX_CSV, printable(str(csv_file))).decode()
        except (OSError, FormatError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read {printable(str(csv_file))}: {e}") from None
        specs = parse_csv(text)
        folders = {s.vin: out / s.vin for s in specs}
    else:
        if vin is None:
            raise click.UsageError("name the VIN (or use --from-csv)")
        specs = [vehicle_spec(vin, [parse_ecu(e) for e in ecus])]
        folders = {vin: out}
    for folder in folders.values():
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise InputError(f"{printable(str(folder))} exists and is not empty")
    layout = cli.config.layout
    image_root = _latest_root(layout.image.metadata)
    director_root = _latest_root(layout.director.metadata)
    serve = cli.config.serve
    url = server or f"https://{serve.host}:{serve.port}"
    catalog = service.ImageCatalog(reading(layout.image, cli.config.expiry))
    images = _factory(catalog, factory, specs) if factory else {}
    ca = cli.ca
    now = datetime.now(UTC)
    new_ca = not ca.exists()
    if new_ca:
        ca.create(now)
    ca_pem = ca.cert_path.read_bytes()
    staged: list[tuple[Path, Path]] = []
    batch: list[inventory.Registration] = []
    try:
        with progress(len(specs), "provisioning", enabled=len(specs) > 1 and not as_json) as step:
            for spec in specs:
                keys = [ecu_key(e.serial) for e in spec.ecus]
                tls = ca.issue(spec.vin, now=now)
                files = kit_files(
                    spec,
                    keys,
                    server=url,
                    image_root=image_root,
                    director_root=director_root,
                    ca_pem=ca_pem,
                    tls_cert=tls.certificate,
                    tls_key=tls.key,
                )
                folder = folders[spec.vin]
                folder.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
                staged.append((tmp, folder))
                _write_kit(tmp, files, images.get(spec.vin, {}))
                batch.append(inventory.Registration(spec, keys, tls.serial))
                step(1)
        asyncio.run(_register(cli, batch, now))
    except BaseException:
        for tmp, _folder in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        if new_ca:  # nothing was provisioned: the home stays as it was
            ca.cert_path.unlink(missing_ok=True)
            ca.key_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                ca.directory.rmdir()
        raise
    for tmp, folder in staged:
        if folder.exists():
            folder.rmdir()  # checked empty above
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
    if as_json:
        echo_json([{"vin": s.vin, "ecus": len(s.ecus), "out": str(folders[s.vin])} for s in specs])
    else:
        for spec in specs[:10]:
            click.echo(f"provisioned {spec.vin} ({len(spec.ecus)} ECUs) in {folders[spec.vin]}")
        if len(specs) > 10:
            click.echo(f"... and {len(specs) - 10} more")


def _factory(
    catalog: service.ImageCatalog, factory: str, specs: list[VehicleSpec]
) -> dict[str, dict[str, Path]]:
    """Per VIN, per ECU serial: the published image file its A slot starts with."""
    bundle, version = service.parse_release(factory)
    release = catalog.release(bundle, version)
    if release is None:
        raise InputError(f"no release {bundle}@{version} in the Image repository")
    out: dict[str, dict[str, Path]] = {}
    for spec in specs:
        planned = plan_assignment(
            spec.vin, [EcuInventory(e.serial, e.hardware_id) for e in spec.ecus], release
        )
        out[spec.vin] = {
            e.serial: consistent_target_file(catalog.home.files, e.target, e.sha256)
            for e in planned.ecus
        }
    return out


def _write_kit(folder: Path, files: dict[str, bytes], slots: dict[str, Path]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = name.endswith(".key") or name.startswith("keys/")
        write_atomic(path, data, mode=0o600 if secret else 0o644)
    if slots:
        (folder / "slots").mkdir()
        for serial, image in slots.items():
            shutil.copyfile(image, folder / "slots" / f"{serial}-a.img")


async def _register(cli: CliContext, batch: list[inventory.Registration], now: datetime) -> None:
    async with fleet_session(cli) as session:
        await inventory.register(session, batch, now)


@vehicle.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--after", default="", type=Text(), help="List VINs after this one (paging).")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@pass_cli
def vehicle_list(cli: CliContext, as_json: bool, after: str, limit: int) -> None:
    """List provisioned vehicles in VIN order.

    \b
    Examples:
      ota vehicle list
      ota vehicle list --json --after VIN0999 --limit 100
    """

    async def run() -> list[tuple[str, datetime, datetime | None, int]]:
        async with fleet_session(cli) as session:
            return await inventory.vehicles(session, after=after, limit=limit)

    rows = asyncio.run(run())
    if as_json:
        echo_json(
            [
                {
                    "vin": vin,
                    "created": created.isoformat(),
                    "revoked": revoked.isoformat() if revoked else None,
                    "ecus": count,
                }
                for vin, created, revoked, count in rows
            ]
        )
        return
    echo_table(
        ["VIN", "ECUS", "CREATED", "STATUS"],
        [
            [vin, count, f"{created:%Y-%m-%d %H:%M}", "revoked" if revoked else "active"]
            for vin, created, revoked, count in rows
        ],
    )


@vehicle.command("show")
@click.argument("vin", type=Text())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def vehicle_show(cli: CliContext, vin: str, as_json: bool) -> None:
    """One vehicle: its ECUs, what each last reported installed, and its assignment.

    \b
    Example:
      ota vehicle show VIN0001 --json
    """

    async def run() -> inventory.VehicleView:
        async with fleet_session(cli) as session:
            return await inventory.require(session, vin)

    view = asyncio.run(run())
    doc = view.to_json()
    if as_json:
        echo_json(doc)
        return
    click.echo(f"{view.vin}  {'revoked' if view.revoked else 'active'}")
    click.echo(f"assigned: {doc['assignment'] or 'nothing'}")
    echo_table(
        ["SERIAL", "HARDWARE ID", "PRIMARY", "INSTALLED"],
        [
            [e["serial"], e["hardware_id"], "yes" if e["primary"] else "", e["installed"] or "-"]
            for e in doc["ecus"]
        ],
    )


@vehicle.command("revoke")
@click.argument("vin", type=Text())
@pass_cli
def vehicle_revoke(cli: CliContext, vin: str) -> None:
    """Refuse a vehicle from now on (a stolen or scrapped car): no metadata, no reports.

    \b
    Example:
      ota vehicle revoke VIN0001
    """

    async def run() -> bool:
        async with fleet_session(cli) as session:
            return await inventory.revoke(session, vin, datetime.now(UTC))

    changed = asyncio.run(run())
    click.echo(f"revoked {vin}" if changed else f"{vin} was already revoked")


@click.command("assign")
@click.argument("vin", type=Text())
@click.argument("release", type=Text())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def assign(cli: CliContext, vin: str, release: str, as_json: bool) -> None:
    """Assign RELEASE (BUNDLE@VERSION) to vehicle VIN: its next poll gets it.

    The release must be published, fit the vehicle's ECUs by hardware id, and move no ECU's
    release counter backwards.

    \b
    Example:
      ota assign VIN0001 body-control@1.1.0
    """
    catalog = service.ImageCatalog(reading(cli.config.layout.image, cli.config.expiry))

    async def run() -> Any:
        async with fleet_session(cli) as session:
            return await service.assign(
                session, catalog, vin, release, actor="cli", now=datetime.now(UTC)
            )

    planned = asyncio.run(run())
    rows = [
        {"serial": e.serial, "target": e.target, "payload": e.payload.kind} for e in planned.ecus
    ]
    if as_json:
        echo_json({"vin": vin, "release": planned.release, "ecus": rows})
        return
    click.echo(f"assigned {planned.release} to {vin}")
    for row in rows:
        click.echo(f"  {row['serial']}: {row['target']} ({row['payload']})")


@click.command("unassign")
@click.argument("vin", type=Text())
@pass_cli
def unassign(cli: CliContext, vin: str) -> None:
    """Take back VIN's assignment: vehicles keep what they run.

    \b
    Example:
      ota unassign VIN0001
    """

    async def run() -> bool:
        async with fleet_session(cli) as session:
            return await service.unassign(session, vin)

    changed = asyncio.run(run())
    click.echo(f"{vin} has no assignment now" if changed else f"{vin} had no assignment")
