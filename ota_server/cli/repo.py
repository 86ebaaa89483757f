"""``ota repo``: create the Image repository, refresh signatures, delegate to suppliers."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ota_server.cli.context import CliContext, pass_cli
from ota_server.cli.params import Text
from ota_server.cli.render import echo_json, echo_table, warn
from ota_server.config import REPOSITORIES
from ota_server.errors import RepositoryStateError
from ota_server.repository.ceremony import add_delegation
from ota_server.repository.lifecycle import (
    init_repositories,
    refresh_repository,
    repository_status,
)
from ota_server.repository.store import root_versions


@click.group()
def repo() -> None:
    """The signed Image repository ($OTA_HOME/repo)."""


@repo.command("init")
@pass_cli
def repo_init(cli: CliContext) -> None:
    """Create version 1 of the Image repository and of the Director's root metadata.

    Uses the keys in $OTA_HOME/keys/image and keys/director; a repository that already
    exists is kept (a home made before the Director gets just the Director's root).

    \b
    Example:
      ota keys init --dev && ota repo init
    """
    homes = [cli.repository(name) for name in REPOSITORIES]
    missing = [home for home in homes if not root_versions(home.files.metadata)]
    if not missing:
        raise RepositoryStateError(f"{cli.config.layout.home} already holds both repositories")
    init_repositories(missing)
    for home in missing:
        click.echo(f"{home.name} repository created in {home.files.served}")


@repo.command("refresh")
@click.option("--force", is_flag=True, help="Re-sign every role, due or not.")
@click.option(
    "--online-only", is_flag=True, help="Only snapshot and timestamp (what 'ota serve' does)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def repo_refresh(cli: CliContext, force: bool, online_only: bool, as_json: bool) -> None:
    """Re-sign roles that are about to expire (less than half their lifetime left).

    Roles whose keys are offline are reported and skipped.

    \b
    Examples:
      ota repo refresh
      ota repo refresh --force --json
    """
    report = refresh_repository(cli.image, force=force, online_only=online_only)
    if as_json:
        echo_json({"resigned": report.resigned, "skipped": report.skipped})
        return
    for role, version in report.resigned.items():
        click.echo(f"re-signed {role} (version {version})")
    if not report.resigned:
        click.echo("nothing was due")
    for role in report.skipped:
        warn(f"{role} is due for re-signing but its keys are not here")


@repo.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def repo_status(cli: CliContext, as_json: bool) -> None:
    """Show each role's version, expiry and signing keys.

    \b
    Example:
      ota repo status --json
    """
    now = datetime.now(UTC)
    roles = repository_status(cli.image, now)
    if as_json:
        echo_json([{**vars(r), "expires": r.expires.isoformat()} for r in roles])
        return
    echo_table(
        ["ROLE", "VERSION", "EXPIRES", "IN", "KEYS HERE/THRESHOLD/TOTAL"],
        [
            [
                r.role,
                r.version,
                r.expires.strftime("%Y-%m-%d %H:%M"),
                _remaining(r.expires - now),
                f"{r.keys_here}/{r.threshold}/{r.keys}",
            ]
            for r in roles
        ],
    )


def _remaining(delta: object) -> str:
    seconds = int(delta.total_seconds())  # type: ignore[attr-defined]
    if seconds < 0:
        return "EXPIRED"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


@repo.command("delegate")
@click.argument("name", type=Text())
@click.option(
    "--hardware-id",
    "hardware_ids",
    multiple=True,
    type=Text(),
    help="Delegate every image of this hardware id (pattern HWID/*). Repeatable.",
)
@click.option(
    "--path", "paths", multiple=True, type=Text(), help="A raw target path pattern. Repeatable."
)
@click.option("--keys", "count", default=1, show_default=True, type=click.IntRange(1, 16))
@click.option("--threshold", default=1, show_default=True, type=click.IntRange(1, 16))
@pass_cli
def repo_delegate(
    cli: CliContext,
    name: str,
    hardware_ids: tuple[str, ...],
    paths: tuple[str, ...],
    count: int,
    threshold: int,
) -> None:
    """Delegate images of some hardware ids to a supplier role NAME with its own keys.

    Images published for those hardware ids are then signed by the supplier's keys
    (keys/image/NAME/), not by the targets key.

    \b
    Example:
      ota repo delegate acme-brakes --hardware-id brake-ecu-v2
    """
    patterns = [f"{h}/*" for h in hardware_ids] + list(paths)
    role = add_delegation(cli.image, name, patterns, count=count, threshold=threshold)
    click.echo(
        f"delegated {', '.join(patterns)} to {name} "
        f"({len(role.keyids)} key(s), threshold {role.threshold})"
    )
