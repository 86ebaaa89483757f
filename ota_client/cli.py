"""``ota-client``: the vehicle-side command line.

For now it verifies and downloads Image-repository targets; the update daemon (run, check,
update, status, boot, reboot) grows here with the vehicle client.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from ota_client import __version__
from ota_client.fetch.tuf_fetcher import HttpFetcher
from ota_client.verify.image_repo import ImageRepository, TransportError, VerificationError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ota-client")
def main() -> None:
    """The vehicle's OTA client: verify, download, install, boot, commit or roll back."""


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
    try:
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
    except (VerificationError, TransportError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{e.filename or ''}: {e.strerror or e}") from None
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        custom = r["custom"]
        click.echo(
            f"verified {r['path']}: {r['length']} bytes, {custom['bundle']} {custom['version']}, "
            f"release counter {custom['release_counter']}"
        )
