"""``ota``: the server's command line (release managers and fleet operators).

Every command is thin: parse options, call one core function, render text or ``--json``.
Errors the operator can fix print one line and exit 1; a bug prints one line too, and the
traceback only with ``OTA_DEBUG=1``.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import click

from ota_client import __version__
from ota_client.strict import printable
from ota_server.cli.context import CliContext
from ota_server.cli.db import db
from ota_server.cli.keys import keys
from ota_server.cli.params import SafePath
from ota_server.cli.payload import payload
from ota_server.cli.release import release
from ota_server.cli.repo import repo
from ota_server.cli.serve import serve
from ota_server.cli.token import token
from ota_server.cli.vehicle import assign, unassign, vehicle
from ota_server.errors import OtaError

MAX_LINE = 1000  # our messages already cut each value (80) and path (200) they quote
MAX_USAGE_LINE = 200  # click's usage errors quote the bad value whole


def one_line(text: str, limit: int) -> str:
    """``text`` on one line of printable characters, at most ``limit`` long."""
    return printable(" ".join(text.split()), limit)


def _shorten(e: click.ClickException) -> click.ClickException:
    text = one_line(e.format_message(), MAX_USAGE_LINE)
    if isinstance(e, click.UsageError):
        return click.UsageError(text, ctx=e.ctx)
    return click.ClickException(text)


class OtaGroup(click.Group):
    """Turns every failure below it into one line and a non-zero exit."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as e:
            raise _shorten(e) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OtaError as e:
            raise click.ClickException(one_line(str(e), MAX_LINE)) from None
        except OSError as e:
            where = f"{printable(str(e.filename))}: " if e.filename else ""
            raise click.ClickException(one_line(f"{where}{e.strerror or e}", MAX_LINE)) from None
        except click.ClickException as e:
            raise _shorten(e) from None
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("OTA_DEBUG"):
                traceback.print_exc()
            raise click.ClickException(
                one_line(
                    f"internal error: {type(e).__name__}: {e} (OTA_DEBUG=1 shows the traceback)",
                    MAX_LINE,
                )
            ) from None


@click.group(cls=OtaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=SafePath(file_okay=False, path_type=Path),
    envvar="OTA_HOME",
    default=Path.home() / ".ota",
    show_default="$OTA_HOME or ~/.ota",
    help="Server home: keys/, repo/, state/ and config.toml.",
)
@click.version_option(__version__, prog_name="ota")
@click.pass_context
def main(ctx: click.Context, home: Path) -> None:
    """Publish signed releases and serve them to vehicles.

    \b
    First steps:
      export OTA_HOME=./ota-home
      ota keys init --dev          # throwaway unencrypted keys
      ota repo init
      ota release publish manifests/examples/body-control-1.0.0.toml
      ota serve --port 8443
    """
    ctx.obj = CliContext(home=home.absolute())


main.add_command(keys)
main.add_command(repo)
main.add_command(release)
main.add_command(serve)
main.add_command(payload)
main.add_command(db)
main.add_command(vehicle)
main.add_command(assign)
main.add_command(unassign)
main.add_command(token)
