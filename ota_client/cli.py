"""``ota-client``: the vehicle-side command line and daemon.

ota-client run       the daemon: finish what the last boot left, then check periodically
ota-client boot      at start-up (before run): finish a trial boot — commit or roll back
ota-client update    one cycle now: check, download, install, arm, reboot (emulated for
                     simulated boot backends), trial, commit or roll back — every ECU together
ota-client check     what is installed and what an update would install (changes nothing)
ota-client status    the persisted state of the vehicle and each ECU (--json)
ota-client reboot    play the bootloader once (simulated and emulated backends)
ota-client fetch     verify and download Image-repository targets (TUF only; debugging)

Errors are one line and an exit code by cause (errors.py): 3 configuration, 4 network,
5 device, 6 bad data, 7 security; 1 for a failed trial and anything else.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ota_client import __version__
from ota_client.agent import machine as m
from ota_client.agent.records import Phase, VehicleState
from ota_client.agent.store import exclusive
from ota_client.agent.vehicle import VehicleAgent, Wait
from ota_client.config import ClientConfig, NetworkConfig, load_config
from ota_client.errors import ClientError, DeviceError, SecurityError
from ota_client.fetch.transport import HttpTransport
from ota_client.slots.raw import ReadBackWriter
from ota_client.strict import FormatError, check_url
from ota_client.verify.repository import TufRepository, read_trust_root

DEFAULT_CONFIG = Path("/etc/ota-client/client.toml")
EXIT_CODES = {"config": 3, "transport": 4, "device": 5, "bad_data": 6, "security": 7}
REBOOT_WAIT = 300.0  # seconds the daemon waits for a reboot it asked for


class Failure(click.ClickException):
    """One line on stderr, and the exit code of the error's cause."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click reads it from the instance


class ClientGroup(click.Group):
    """Turns every failure below it into one line and the exit code of its cause."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as e:
            raise Failure(str(e), e.exit_code) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise Failure(f"{where}{e.strerror or e}", DeviceError.exit_code) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("OTA_DEBUG"):
                traceback.print_exc()
            raise Failure(
                f"internal error: {type(e).__name__}: {str(e)[:200]} (OTA_DEBUG=1 shows more)", 1
            ) from None


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


def _agent(
    ctx: click.Context, emulate: bool | None = None, *, inputs: bool = False
) -> VehicleAgent:
    """The agent; with ``inputs``, the trust root and TLS files are checked now, before the
    lock or anything else is written."""
    agent = VehicleAgent(_config(ctx), emulate_reboot=emulate)
    ctx.call_on_close(agent.close)
    if inputs:
        _ = agent.repo
    return agent


def _image(image: Any) -> str:
    return f"{image.version} (release counter {image.release_counter})" if image else "unknown"


def _summary(agent: VehicleAgent, wait: Wait | None) -> None:
    s = agent.state
    for serial in agent.ecus:
        click.echo(f"{serial}: running {_image(s.record(serial).installed)}")
    if wait is not None and wait.reason == "reboot":
        click.echo("rebooting into the new slots; 'ota-client boot' finishes at start-up")
    elif s.phase != Phase.IDLE:
        click.echo(f"vehicle: {s.phase} ({s.bundle} {s.version})")


def _fail_on_error(s: VehicleState) -> None:
    if s.error:
        raise Failure(s.error, EXIT_CODES.get(s.error_kind or "", 1))


EMULATE = click.option(
    "--emulate-reboot",
    is_flag=True,
    default=None,
    help="Play the bootloader instead of rebooting (tests, demos).",
)


@main.command()
@EMULATE
@click.pass_context
def update(ctx: click.Context, emulate_reboot: bool | None) -> None:
    """Run one update cycle now for the whole vehicle; exit non-zero if it failed.

    Back-off waits are skipped; releases given up stay given up.

    \b
    Example:
      ota-client -c client.toml update
    """
    agent = _agent(ctx, emulate_reboot, inputs=True)
    with exclusive(agent.config.data_dir):
        wait = agent.cycle(force=True)
    _summary(agent, wait)
    if wait is None or wait.reason != "reboot":
        _fail_on_error(agent.state)


@main.command()
@EMULATE
@click.pass_context
def boot(ctx: click.Context, emulate_reboot: bool | None) -> None:
    """At start-up: finish a trial boot (health checks, then commit or roll back).

    \b
    Example (systemd, before ota-client run):
      ExecStartPre=/usr/bin/ota-client boot
    """
    agent = _agent(ctx, emulate_reboot, inputs=True)
    with exclusive(agent.config.data_dir, wait=60):
        wait = agent.boot()
    _summary(agent, wait)


@main.command()
@click.option("--once", is_flag=True, help="One cycle, then exit.")
@click.pass_context
def run(ctx: click.Context, once: bool) -> None:
    """The daemon: finish the last boot's work, then check every poll interval (with jitter).

    Failed releases back off exponentially (with jitter) and are given up after
    max_attempts; after asking for a reboot the daemon waits for it.

    \b
    Example:
      ota-client -c /etc/ota-client/client.toml run
    """
    agent = _agent(ctx, inputs=True)
    config = agent.config
    with exclusive(config.data_dir, wait=600):
        wait = agent.boot()
    while True:
        if wait is None or wait.reason != "reboot":
            with exclusive(config.data_dir, wait=600):  # released while sleeping
                wait = _logged_cycle(agent)
        if once:
            return
        time.sleep(_pause(agent, wait))
        wait = None


def _logged_cycle(agent: VehicleAgent) -> Wait | None:
    try:
        wait = agent.cycle()
    except ClientError as e:
        click.echo(f"cycle stopped: {e}", err=True)
        return None
    if agent.state.error:
        click.echo(f"vehicle: {agent.state.error}", err=True)
    return wait


def _pause(agent: VehicleAgent, wait: Wait | None) -> float:
    """Seconds until the next cycle: the poll interval with jitter, or sooner for a retry."""
    config = agent.config
    if wait is not None and wait.reason == "reboot":
        return REBOOT_WAIT
    pause = config.poll_interval * (1 + random.uniform(-config.poll_jitter, config.poll_jitter))  # noqa: S311
    retry = agent.state.retry
    if retry is not None:
        pause = min(pause, max(1.0, retry.not_before - time.time()))
    return pause


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Show what each ECU runs and what the next update would install. Changes nothing.

    \b
    Example:
      ota-client check --json
    """
    agent = _agent(ctx)
    agent.state = agent.store.load()
    ecus, decision = agent.check()
    jobs = {j.serial: j for j in decision.jobs} if isinstance(decision, m.Planned) else {}
    out: dict[str, Any] = {
        "bundle": decision.bundle if isinstance(decision, m.Planned) else None,
        "version": decision.version if isinstance(decision, m.Planned) else None,
        "waiting": isinstance(decision, m.NothingToDo) and decision.waiting,
        "ecus": [
            {
                "ecu": e.serial,
                "installed": asdict(e.installed) if e.installed else None,
                "update": None
                if e.serial not in jobs
                else {
                    "target": asdict(jobs[e.serial].target),
                    "download": asdict(jobs[e.serial].fetch),
                    "slot": jobs[e.serial].slot,
                },
            }
            for e in ecus
        ],
    }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for entry in out["ecus"]:
        inst, upd = entry["installed"], entry["update"]
        click.echo(
            f"{entry['ecu']}: running {inst['version'] if inst else 'an unknown image'}; "
            + (
                "up to date"
                if upd is None
                else f"update to {upd['target']['version']} via {upd['download']['kind']} "
                f"({upd['download']['length']} bytes) into slot {upd['slot']}"
            )
        )
    if out["bundle"]:
        click.echo(f"next: {out['bundle']} {out['version']}")
    elif out["waiting"]:
        click.echo("an update failed recently: waiting for its back-off to end")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the vehicle's update state, each ECU's slots, and recent security events.

    \b
    Example:
      ota-client status --json
    """
    agent = _agent(ctx)
    state = agent.store.load()
    facts = agent.facts()
    doc = state.to_json()
    out = {
        "phase": state.phase,
        "bundle": state.bundle,
        "version": state.version,
        "error": state.error,
        "error_kind": state.error_kind,
        "interrupted": state.interrupted,
        "retry": doc["retry"],
        "security": doc["security"],
        "queued_reports": len(agent.outbox.items(time.time(), repair=False)),
        "ecus": [
            {
                "ecu": serial,
                "booted_slot": facts[serial].booted,
                "active_slot": facts[serial].active,
                "trial": facts[serial].trial,
                "tries": facts[serial].tries,
                **doc["ecus"].get(serial, {"installed": None, "max_counter": 0, "rejected": []}),
                "job": next((asdict(j) for j in state.jobs if j.serial == serial), None),
            }
            for serial in agent.ecus
        ],
    }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(
        f"vehicle: {out['phase']}"
        + (f" ({state.bundle} {state.version})" if state.bundle else "")
        + (f", error: {state.error}" if state.error else "")
    )
    for e in out["ecus"]:
        inst = e["installed"]
        click.echo(
            f"{e['ecu']}: booted {e['booted_slot']}, active {e['active_slot']}, "
            f"running {inst['version'] if inst else 'unknown'}"
            + (f", {e['job']['step']} into slot {e['job']['slot']}" if e["job"] else "")
        )
    for event in state.security:
        click.echo(f"security: {event.message}")


@main.command()
@click.pass_context
def reboot(ctx: click.Context) -> None:
    """Play the bootloader once for every ECU (simulated boot control, tests and demos).

    \b
    Example:
      ota-client reboot && ota-client boot
    """
    agent = _agent(ctx, emulate=True)
    with exclusive(agent.config.data_dir, wait=60):
        for serial, boot_control in agent.boots.items():
            boot_control.ensure()
            click.echo(f"{serial}: booted slot {boot_control.emulate_reboot()}")


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
    help="Where verified metadata is kept.",
)
@click.option(
    "--ca-file", type=click.Path(dir_okay=False, path_type=Path), help="CA bundle for HTTPS."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the verified files in this directory.",
)
@click.option("--allow-insecure-http", is_flag=True, help="Accept an http:// repository URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def fetch(
    targets: tuple[str, ...],
    repo_url: str,
    trust_root: Path,
    cache: Path,
    ca_file: Path | None,
    output: Path | None,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Verify and download TARGETS from the Image repository (TUF verification only).

    \b
    Example:
      ota-client fetch --repo http://127.0.0.1:8443/repo --trust-root 1.root.json \\
          bcm-s32k/bcm-1.0.0.bin -o out/
    """
    try:
        check_url(repo_url, ("https", "http") if allow_insecure_http else ("https",))
    except FormatError as e:
        raise click.BadParameter(f"{e} (http:// needs --allow-insecure-http)") from None
    transport = HttpTransport(NetworkConfig(ca_file=ca_file))
    try:
        repo = TufRepository(repo_url, cache, read_trust_root(trust_root), transport)
        repo.refresh()
        results: list[dict[str, Any]] = []
        for path in targets:
            target = repo.target(path)
            folder = output or cache
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fetch.", suffix=".tmp")
            os.close(fd)
            sink = ReadBackWriter(Path(tmp))
            try:
                transport.download(
                    repo.target_url(target.info),
                    sink,
                    start=0,
                    length=target.info.length,
                    etag=None,
                    checkpoint=lambda _n, _e: None,
                )
                if sink.finish() != target.sha256:
                    raise SecurityError(f"{path}: the download does not match its signed hash")
                if output is not None:
                    os.replace(tmp, output / Path(path).name)
            finally:
                sink.close()
                Path(tmp).unlink(missing_ok=True)
            results.append(
                {
                    "path": path,
                    "length": target.info.length,
                    "sha256": target.sha256,
                    "custom": target.custom.to_dict(),
                }
            )
    finally:
        transport.close()
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        custom = r["custom"]
        click.echo(
            f"verified {r['path']}: {r['length']} bytes, {custom['bundle']} {custom['version']}, "
            f"release counter {custom['release_counter']}"
        )
