"""``ota-client``: the vehicle-side command line and daemon.

ota-client run       the daemon: finish what the last boot left, then check periodically
ota-client boot      at start-up (before run): finish a trial boot — commit or roll back
ota-client update    one cycle now: check, download, install, arm, reboot (emulated for
                     simulated boot backends), trial, commit or roll back
ota-client check     what is installed and what an update would install (changes nothing)
ota-client status    the persisted state of each ECU (--json)
ota-client reboot    play the bootloader once (simulated and emulated backends)
ota-client fetch     verify and download Image-repository targets (TUF only; debugging)
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ota_client import __version__
from ota_client.agent.runner import Agent, agents
from ota_client.agent.store import StateError, exclusive
from ota_client.boot.rules import BootError
from ota_client.config import ClientConfig, ConfigError, load_config
from ota_client.fetch.tuf_fetcher import HttpFetcher
from ota_client.slots import SlotError
from ota_client.verify.image_repo import ImageRepository, TransportError, VerificationError

DEFAULT_CONFIG = Path("/etc/ota-client/client.toml")
ERRORS = (ConfigError, StateError, BootError, SlotError, VerificationError, TransportError, OSError)


class ClientGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ERRORS as e:
            message = (
                f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
            )
            raise click.ClickException(message) from None


@click.group(cls=ClientGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="OTA_CLIENT_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Client configuration (TOML).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log each state transition.")
@click.version_option(__version__, prog_name="ota-client")
@click.pass_context
def main(ctx: click.Context, config_path: Path, verbose: bool) -> None:
    """The vehicle's OTA client: verify, download, install, boot, commit or roll back."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    ctx.obj = config_path


def _config(ctx: click.Context) -> ClientConfig:
    return load_config(ctx.obj)


def _emulate(config: ClientConfig, emulate: bool | None) -> list[Agent]:
    return agents(config, emulate_reboot=emulate)


@main.command()
@click.option(
    "--emulate-reboot",
    is_flag=True,
    default=None,
    help="Play the bootloader instead of rebooting (tests, demos).",
)
@click.pass_context
def update(ctx: click.Context, emulate_reboot: bool | None) -> None:
    """Run one update cycle now for every ECU; exit 1 if one failed.

    \b
    Example:
      ota-client -c client.toml update
    """
    failed = []
    config = _config(ctx)
    with exclusive(config.data_dir):
        states = []
        for agent in _emulate(config, emulate_reboot):
            agent.on_boot()
            states.append((agent, agent.cycle()))
    for agent, state in states:
        line = f"{agent.ecu.serial}: {state.state}"
        if state.installed:
            line += (
                f", running {state.installed.version} "
                f"(release counter {state.installed.release_counter})"
            )
        click.echo(line)
        if state.error:
            failed.append(f"{agent.ecu.serial}: {state.error}")
    if failed:
        raise click.ClickException("; ".join(failed))


@main.command()
@click.option(
    "--emulate-reboot", is_flag=True, default=None, help="Play the bootloader for rollbacks."
)
@click.pass_context
def boot(ctx: click.Context, emulate_reboot: bool | None) -> None:
    """At start-up: finish a trial boot (health checks, then commit or roll back).

    \b
    Example (systemd, before ota-client run):
      ExecStartPre=/usr/bin/ota-client boot
    """
    config = _config(ctx)
    with exclusive(config.data_dir, wait=60):
        for agent in _emulate(config, emulate_reboot):
            state = agent.on_boot()
            click.echo(f"{agent.ecu.serial}: {state.state}")


@main.command()
@click.option("--once", is_flag=True, help="One cycle, then exit (like update).")
@click.pass_context
def run(ctx: click.Context, once: bool) -> None:
    """The daemon: finish the last boot's work, then check every poll interval (with jitter).

    \b
    Example:
      ota-client -c /etc/ota-client/client.toml run
    """
    config = _config(ctx)
    workers = agents(config)
    with exclusive(config.data_dir, wait=600):
        for agent in workers:
            agent.on_boot()
    while True:
        with exclusive(config.data_dir, wait=600):  # released while sleeping
            for agent in workers:
                state = agent.cycle()
                if state.error:
                    click.echo(f"{agent.ecu.serial}: {state.error}", err=True)
        if once:
            return
        jitter = 1 + random.uniform(-config.poll_jitter, config.poll_jitter)  # noqa: S311
        time.sleep(config.poll_interval * jitter)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Show what each ECU runs and what an update would install. Changes nothing.

    \b
    Example:
      ota-client check --json
    """
    out: list[dict[str, Any]] = []
    for agent in agents(_config(ctx)):
        installed, choice = agent.check()
        out.append(
            {
                "ecu": agent.ecu.serial,
                "installed": asdict(installed) if installed else None,
                "update": None
                if choice is None
                else {"target": asdict(choice.target), "download": asdict(choice.fetch)},
            }
        )
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for entry in out:
        inst = entry["installed"]
        upd = entry["update"]
        click.echo(
            f"{entry['ecu']}: running {inst['version'] if inst else 'an unknown image'}; "
            + (
                "up to date"
                if upd is None
                else f"update to {upd['target']['version']} via {upd['download']['kind']} "
                f"({upd['download']['length']} bytes)"
            )
        )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show each ECU's update state, slots and last error.

    \b
    Example:
      ota-client status --json
    """
    out = []
    for agent in agents(_config(ctx)):
        state = agent.status()
        out.append(
            {
                "ecu": agent.ecu.serial,
                "active_slot": agent.boot.active_slot(),
                "booted_slot": agent.boot.booted_slot(),
                "trial": agent.boot.trial(),
                **state.to_json(),
            }
        )
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for e in out:
        inst = e["installed"]
        click.echo(
            f"{e['ecu']}: {e['state']}, booted {e['booted_slot']}, active {e['active_slot']}, "
            f"running {inst['version'] if inst else 'unknown'}"
            + (f", error: {e['error']}" if e["error"] else "")
        )


@main.command()
@click.pass_context
def reboot(ctx: click.Context) -> None:
    """Play the bootloader once for every ECU (simulated boot control, tests and demos).

    \b
    Example:
      ota-client reboot && ota-client boot
    """
    config = _config(ctx)
    with exclusive(config.data_dir, wait=60):
        for agent in agents(config):
            click.echo(f"{agent.ecu.serial}: booted slot {agent.boot.emulate_reboot()}")


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--repo", "repo_url", required=True, help="Image repository URL, e.g. https://ota.example/repo"
)
@click.option(
    "--trust-root",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Initial root metadata shipped with the vehicle (e.g. 1.root.json).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ota-client-cache"),
    show_default=True,
    help="Where verified metadata and targets are kept.",
)
@click.option(
    "--ca-file", type=click.Path(dir_okay=False, path_type=Path), help="CA bundle for HTTPS."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy the verified files into this directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def fetch(
    targets: tuple[str, ...],
    repo_url: str,
    trust_root: Path,
    cache: Path,
    ca_file: Path | None,
    output: Path | None,
    as_json: bool,
) -> None:
    """Verify and download TARGETS from the Image repository (TUF verification only).

    \b
    Example:
      ota-client fetch --repo http://127.0.0.1:8443/repo --trust-root 1.root.json \\
          bcm-s32k/bcm-1.0.0.bin -o out/
    """
    root = trust_root.read_bytes()
    repo = ImageRepository(repo_url, cache, root, fetcher=HttpFetcher(ca_file=ca_file))
    repo.refresh()
    results: list[dict[str, Any]] = []
    for path in targets:
        target = repo.target(path)
        local = repo.download(target)
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, output / Path(path).name)
        results.append(
            {
                "path": path,
                "length": target.info.length,
                "sha256": target.info.hashes.get("sha256"),
                "custom": target.custom.to_dict(),
            }
        )
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        custom = r["custom"]
        click.echo(
            f"verified {r['path']}: {r['length']} bytes, {custom['bundle']} {custom['version']}, "
            f"release counter {custom['release_counter']}"
        )
