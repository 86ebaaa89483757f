"""``ota db``: the fleet database's schema revision (``status``) and its migration (``upgrade``)."""

from __future__ import annotations

import asyncio

import click

from ota_server.cli.context import CliContext, pass_cli
from ota_server.cli.render import echo_json
from ota_server.fleet.db import Revision, opened, shown, upgrade, url_for


@click.group()
def db() -> None:
    """The fleet database: SQLite in $OTA_HOME/state/fleet.db, or database_url in config.toml."""


@db.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def db_upgrade(cli: CliContext, as_json: bool) -> None:
    """Migrate the fleet database's schema to this version of ota.

    Run it once after installing a new ota, before its servers start: a server never
    migrates a database that other servers may share (PostgreSQL). The embedded SQLite
    database is migrated when 'ota serve' opens it; this does it now.

    \b
    Examples:
      ota db upgrade
      ota db upgrade --json
    """
    url = url_for(cli.config)
    before = asyncio.run(upgrade(url))
    if as_json:
        echo_json({"from": before.current, "to": before.head})
    elif before.is_current:
        click.echo(f"the fleet database {shown(url)} is already at revision {before.head}")
    else:
        click.echo(
            f"upgraded the fleet database {shown(url)} from revision "
            f"{before.current or 'none (empty)'} to {before.head}"
        )


async def _revision(cli: CliContext) -> Revision:
    async with opened(url_for(cli.config)) as database:
        return await database.revision()


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def db_status(cli: CliContext, as_json: bool) -> None:
    """Show which fleet database this home uses and whether its schema is current.

    Changes nothing (an embedded database that does not exist yet is not created).

    \b
    Examples:
      ota db status
      ota db status --json
    """
    url = url_for(cli.config)
    revision = asyncio.run(_revision(cli))
    if as_json:
        echo_json(
            {
                "database": shown(url),
                "revision": revision.current,
                "head": revision.head,
                "current": revision.is_current,
            }
        )
        return
    click.echo(f"database  {shown(url)}")
    click.echo(f"revision  {revision.current or 'none (empty)'}")
    click.echo(f"needed    {revision.head}")
    if not revision.is_current:
        when = "when 'ota serve' opens it, or " if url.get_backend_name() == "sqlite" else ""
        click.echo(f"not current: it is upgraded {when}by 'ota db upgrade'")
