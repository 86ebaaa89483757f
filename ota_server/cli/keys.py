"""``ota keys``: create, list and rotate the signing keys of both repositories."""

from __future__ import annotations

from typing import Any

import click

from ota_server.cli.context import CliContext, pass_cli
from ota_server.cli.params import Text
from ota_server.cli.render import echo_json, echo_table, warn
from ota_server.config import REPOSITORIES
from ota_server.errors import KeyStoreError
from ota_server.repository.ceremony import init_keys, rotate_keys
from ota_server.repository.store import root_versions


@click.group()
def keys() -> None:
    """Signing keys (under $OTA_HOME/keys/image and keys/director; see keys/README.md)."""


@keys.command("init")
@click.option(
    "--dev", is_flag=True, help="Unencrypted keys for a throwaway setup. Never in production."
)
@click.option(
    "--root-keys",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Number of root keys to create.",
)
@click.option(
    "--root-threshold",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Root signatures needed for a new root (e.g. 2 of 3 in production).",
)
@pass_cli
def keys_init(cli: CliContext, dev: bool, root_keys: int, root_threshold: int) -> None:
    """Create ed25519 keys for root, targets, snapshot and timestamp of both repositories.

    The Image repository's root and targets keys are offline keys (release managers); the
    Director's root is offline, its other roles sign online, per vehicle. A repository that
    already has keys keeps them. Keys are encrypted with OTA_KEY_PASSPHRASE (or a prompt)
    unless --dev.

    \b
    Examples:
      ota keys init --dev
      OTA_KEY_PASSPHRASE=... ota keys init --root-keys 3 --root-threshold 2
    """
    homes = [cli.repository(name) for name in REPOSITORIES]
    if all(home.keys.exists() for home in homes):
        raise KeyStoreError(f"{cli.config.layout.keys} already holds keys (use 'ota keys rotate')")
    if dev:
        warn(
            "WARNING: --dev keys are NOT encrypted. Anyone who reads "
            f"{cli.config.layout.keys} can sign software for your vehicles."
        )
    for home in homes:
        if home.keys.exists():
            click.echo(f"{home.name}: keys already here, kept")
            continue
        roles = init_keys(home.keys, root_keys=root_keys, root_threshold=root_threshold, dev=dev)
        for role, rk in roles.items():
            click.echo(f"{home.name} {role}: {len(rk.keyids)} key(s), threshold {rk.threshold}")
    click.echo(f"keys written to {cli.config.layout.keys}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def keys_list(cli: CliContext, as_json: bool) -> None:
    """Show each repository's roles, keys, thresholds and whether private keys are here.

    \b
    Example:
      ota keys list --json
    """
    rows: list[dict[str, Any]] = []
    dev = False
    for name in REPOSITORIES:
        store = cli.repository(name).keys
        # The Image keys must be there (a missing key ring is an error); the Director's
        # are missing in a home made before the Director until 'ota keys init' adds them.
        if name != "image" and not store.exists():
            continue
        dev = dev or store.dev
        for role, rk in sorted(store.roles().items()):
            for keyid in rk.keyids:
                rows.append(
                    {
                        "repository": name,
                        "role": role,
                        "keyid": keyid,
                        "threshold": rk.threshold,
                        "private_key_here": store.has_private(role, keyid),
                    }
                )
    if as_json:
        echo_json({"dev": dev, "keys": rows})
        return
    if dev:
        warn("these are unencrypted --dev keys")
    echo_table(
        ["REPOSITORY", "ROLE", "KEYID", "THRESHOLD", "PRIVATE KEY"],
        [
            [
                r["repository"],
                r["role"],
                r["keyid"][:16],
                r["threshold"],
                "here" if r["private_key_here"] else "offline",
            ]
            for r in rows
        ],
    )


@keys.command("rotate")
@click.argument("role", type=Text())
@click.option(
    "--repository",
    type=click.Choice(REPOSITORIES),
    default="image",
    show_default=True,
    help="Whose key: the Image repository's or the Director's.",
)
@click.option(
    "--keys",
    "count",
    type=click.IntRange(1, 16),
    help="Number of new keys (default: as many as now).",
)
@click.option("--threshold", type=click.IntRange(1, 16), help="New threshold (default: as now).")
@pass_cli
def keys_rotate(
    cli: CliContext, role: str, repository: str, count: int | None, threshold: int | None
) -> None:
    """Replace every key of ROLE (root, targets, snapshot, timestamp or a supplier role).

    A new root version is signed by the old and the new root keys, so vehicles holding any
    earlier root follow the chain. Replaced keys move to keys/<repository>/retired/. A
    Director rotation writes its new root; each vehicle's metadata is signed with the new
    keys at its next poll.

    \b
    Examples:
      ota keys rotate timestamp
      ota keys rotate root --keys 3 --threshold 2
      ota keys rotate targets --repository director
    """
    home = cli.repository(repository)
    if not root_versions(home.files.metadata):
        raise click.ClickException("no repository yet: run 'ota repo init' first")
    report = rotate_keys(home, role, count=count, threshold=threshold)
    click.echo(
        f"rotated {repository} {role}: {len(report.old_keyids)} old key(s) retired, "
        f"{len(report.new_keyids)} new (threshold {report.threshold}); "
        f"root is now version {report.root_version}"
    )
