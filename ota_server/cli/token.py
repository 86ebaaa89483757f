"""``ota token``: operators' API tokens (create shows the token once; only its digest is kept)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import click

from ota_server.cli.context import CliContext, pass_cli
from ota_server.cli.params import Text
from ota_server.cli.render import echo_json, echo_table
from ota_server.cli.vehicle import fleet_session
from ota_server.fleet import tokens


@click.group()
def token() -> None:
    """API tokens for the operator API and the dashboard, each with a role."""


@token.command("create")
@click.argument("name", type=Text(64))
@click.option("--role", required=True, type=click.Choice(tokens.ROLES))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def token_create(cli: CliContext, name: str, role: str, as_json: bool) -> None:
    """Create a token NAME with ROLE and print it (once: it cannot be shown again).

    \b
    Examples:
      ota token create alice --role fleet-operator
      ota token create grafana --role read-only --json
    """

    async def run() -> str:
        async with fleet_session(cli) as session:
            return await tokens.create(session, name, role, datetime.now(UTC))

    secret = asyncio.run(run())
    if as_json:
        echo_json({"name": name, "role": role, "token": secret})
    else:
        click.echo(secret)
        click.echo(f"token {name} ({role}): keep it safe, it is not shown again", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def token_list(cli: CliContext, as_json: bool) -> None:
    """List tokens (names, roles, whether revoked; never the tokens).

    \b
    Example:
      ota token list --json
    """

    async def run() -> list[dict[str, Any]]:
        async with fleet_session(cli) as session:
            return [
                {
                    "name": t.name,
                    "role": t.role,
                    "created": t.created_at.isoformat(),
                    "revoked": t.revoked_at.isoformat() if t.revoked_at else None,
                }
                for t in await tokens.listing(session)
            ]

    rows = asyncio.run(run())
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["NAME", "ROLE", "CREATED", "STATUS"],
        [[r["name"], r["role"], r["created"][:16], "revoked" if r["revoked"] else "active"]
         for r in rows],
    )  # fmt: skip


@token.command("revoke")
@click.argument("name", type=Text(64))
@pass_cli
def token_revoke(cli: CliContext, name: str) -> None:
    """Revoke token NAME: it is refused from now on.

    \b
    Example:
      ota token revoke alice
    """

    async def run() -> None:
        async with fleet_session(cli) as session:
            await tokens.revoke(session, name, datetime.now(UTC))

    asyncio.run(run())
    click.echo(f"revoked token {name}")
