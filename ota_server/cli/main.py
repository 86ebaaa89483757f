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
from ota_server.cli.context import CliContext
from ota_server.cli.keys import keys
from ota_server.cli.payload import payload
from ota_server.cli.release import release
from ota_server.cli.repo import repo
from ota_server.cli.serve import serve
from ota_server.errors import OtaError


class OtaGroup(click.Group):
    """Turns every failure below it into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OtaError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("OTA_DEBUG"):
                traceback.print_exc()
            raise click.ClickException(
                f"internal error: {type(e).__name__}: {e} (OTA_DEBUG=1 shows the traceback)"
            ) from None


@click.group(cls=OtaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
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
