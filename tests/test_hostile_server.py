"""Hostile input, refused on every surface of ``ota`` and ``ota serve`` (issue 7, server side).

Every case starts from something valid — a server home with dev keys, a repository with a
release and a supplier delegation, a config.toml, the manifest of the next release, a delta
payload, a vehicle report — breaks one input the way disks, careless integrators and attackers
do (``tests/mutate.py``: truncations, bit flips, type swaps, NaN/inf/huge integers, NUL in
strings, deep nesting, long dotted keys, oversized and special files), and runs the real entry
point: the click command in-process (under a per-case deadline), a subprocess under an address
space limit where memory is the question, and the aiohttp app or the real ``ota serve``.

A case passes when the input is refused cleanly — a non-zero exit, exactly one short ``Error:``
line, no traceback, no "internal error", and the home byte for byte as before — or, for the
few mutations that leave the input valid, when the command succeeds cleanly. The server never
answers a request with a 5xx. Fixed seeds and ``derandomize``: every run is the same campaign.
The regression tests for the classes of issue 7 are named ``test_classN_...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import lzma
import math
import os
import random
import resource
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, make_url, select

from ota_client.metadata.reports import Report
from ota_client.payload.format import Codec, Header, Op, OpType
from ota_client.strict import FormatError
from ota_server.config import Layout, ServerConfig, parse_config
from ota_server.errors import ConfigError
from ota_server.fleet.db import opened
from ota_server.fleet.report_policy import ReportLimits
from ota_server.fleet.schema import Event
from ota_server.http.app import create_app
from ota_server.http.appkeys import DATABASE
from ota_server.keys.store import parse_keyring
from ota_server.payload import generate as generate_module
from ota_server.payload.generate import generate, workers
from ota_server.repository.transaction import journal_from_data
from tests import mutate
from tests.helpers import EXAMPLES, make_home, ok, ota, serve, write_manifest
from tests.hostile import (
    ERROR_LINE,
    SPECIALS,
    Content,
    Special,
    campaign_fixture,
    cases,
    changes,
    clean,
    deadline,
    place,
    refused,
    remove,
    snapshot,
)

SEED = 7
MEMORY_LIMIT = 256 << 20  # address space of a subprocess case (Python + numpy need ~150 MiB)
DEADLINE = 30.0  # seconds for one in-process case
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_campaign = campaign_fixture("test_hostile_server")


# -- the world: a valid home and valid inputs --------------------------------------------------

MANIFEST = """bundle = "body"
version = "{version}"

[[images]]
ecu = "bcm"
file = "bcm.bin"
hardware_ids = ["bcm-hw"]

[[images]]
ecu = "brakes"
file = "brakes.bin"
hardware_ids = ["acme-hw"]
release_counter = {counter}
"""

CONFIG = """[repository]
expiry_days = { root = 365, targets = 90, delegated = 90, snapshot = 1, timestamp = 1 }
refresh_fraction = 0.5

[deltas]
sources = 1
max_ratio = 0.9
chunk_size = 65536
effort = "fast"
jobs = 1

[serve]
host = "127.0.0.1"
port = 8443
tls_cert = "tls/server.pem"
tls_key = "tls/server.key"
refresh_interval = 600
"""


def _images(seed: int) -> tuple[bytes, bytes]:
    rnd = random.Random(seed)
    one = rnd.randbytes(96 << 10)
    two = one[: 40 << 10] + rnd.randbytes(300) + one[(40 << 10) + 300 :]
    return one, two


@dataclass(frozen=True)
class World:
    root: Path
    home: Path  # the template: copied, never changed
    manifest: Path  # the next release: valid, outside the home
    source: Path
    target: Path
    payload: Path  # delta source -> target
    full_payload: Path

    def keys(self, role: str, suffix: str) -> list[str]:
        return sorted(
            str(p.relative_to(self.home))
            for p in (self.home / "keys" / "image" / role).glob(f"*{suffix}")
        )

    def metadata(self) -> list[str]:
        names = sorted(p.name for p in (self.home / "repo/metadata").iterdir())
        latest: dict[str, str] = {}
        for name in names:
            role = name.split(".", 1)[1] if name[0].isdigit() else name
            latest[role] = name  # sorted: the last is the newest (single-digit versions here)
        return [f"repo/metadata/{n}" for n in sorted(latest.values())]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("hostile")
    home = root / "home"
    bcm, bcm2 = _images(1)
    brakes, brakes2 = _images(2)
    first = write_manifest(
        root / "m1",
        MANIFEST.format(version="1.0.0", counter=1),
        {"bcm.bin": bcm, "brakes.bin": brakes},
    )
    ok(ota(home, "keys", "init", "--dev"))
    ok(ota(home, "repo", "init"))
    ok(ota(home, "repo", "delegate", "acme", "--hardware-id", "acme-hw"))
    (home / "config.toml").write_text(CONFIG)
    ok(ota(home, "release", "publish", "-q", first))
    ok(ota(home, "db", "upgrade"))  # the fleet database, as a served home has it
    manifest = write_manifest(
        root / "m2",
        MANIFEST.format(version="1.1.0", counter=2),
        {"bcm.bin": bcm2, "brakes.bin": brakes2},
    )
    source, target = root / "source.img", root / "target.img"
    source.write_bytes(bcm)
    target.write_bytes(bcm2)
    payload, full = root / "delta.payload", root / "full.payload"
    with open(payload, "wb") as out:
        generate(target, out, source, chunk_size=16 << 10, jobs=1, effort="fast")
    with open(full, "wb") as out:
        generate(target, out, None, chunk_size=16 << 10, jobs=1, effort="best")
    return World(root, home, manifest, source, target, payload, full)


class Campaign:
    """A working copy of the world's home; runs cases against it and restores it."""

    def __init__(self, world: World, tmp_path: Path, template: Path | None = None) -> None:
        self.world = world
        self.template = template or world.home
        self.home = tmp_path / "home"
        self.reset()

    def reset(self) -> None:
        if self.home.exists():
            shutil.rmtree(self.home)
        shutil.copytree(self.template, self.home, symlinks=True)
        self.clean = snapshot(self.home)

    def resolve(self, target: str | Path) -> Path:
        return target if isinstance(target, Path) else self.home / target

    def run(
        self,
        target: str | Path | None,
        content: Content | None,
        args: Sequence[str | os.PathLike[str]],
        label: str,
        *,
        must_fail: bool = False,
        env: dict[str, str] | None = None,
    ) -> Result:
        """Put ``content`` at ``target``, run ``ota ARGS``; check a clean outcome; restore."""
        path = None if target is None else self.resolve(target)
        original: bytes | None = None
        if path is not None and content is not None:
            original = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            place(path, content)
        before = snapshot(self.home)
        with deadline(DEADLINE, label):
            result = ota(self.home, *args, env=env)
        if must_fail or result.exit_code != 0:
            refused(result, label)
            after = snapshot(self.home)
            assert after == before, f"{label}: a refused command changed {changes(before, after)}"
        else:
            clean(result, label)
        if path is not None and content is not None:
            if original is None:
                remove(path)
            else:
                place(path, original)
        if result.exit_code == 0 and snapshot(self.home) != self.clean:
            self.reset()
        return result


@pytest.fixture
def campaign(world: World, tmp_path: Path) -> Campaign:
    return Campaign(world, tmp_path)


PUBLISH = ("release", "publish", "-q")
ROTATE = ("keys", "rotate", "timestamp")
ROTATE_SUPPLIER = ("keys", "rotate", "acme")
REFRESH = ("repo", "refresh", "--force")
DELEGATE = ("repo", "delegate", "beta", "--hardware-id", "beta-hw")
STATUS = ("repo", "status")
LIST = ("release", "list", "--json")
KEYS_LIST = ("keys", "list", "--json")


def _commands(world: World, *names: tuple[str, ...]) -> list[list[str]]:
    return [[*n, str(world.manifest)] if n == PUBLISH else list(n) for n in names]


def _damages(rnd: random.Random, data: bytes) -> list[tuple[str, Content]]:
    """A few damages of one file: the specials and some byte-level ones."""
    cut = [(f"truncated to {n}", data[:n]) for n in (0, 1, len(data) // 2, len(data) - 1)]
    flips = list(mutate.byte_level(data, rnd, 4))[6:]
    return [(s.value, s) for s in SPECIALS] + cut + flips  # MISSING first


# == class 8: every command validates all its inputs before its first durable write ==========


MUTATING = [ROTATE, ROTATE_SUPPLIER, REFRESH, DELEGATE, PUBLISH]


def _input_files(world: World) -> list[str]:
    files = ["config.toml", "keys/image/keyring.json", *world.metadata()]
    for role in ("root", "targets", "snapshot", "timestamp", "acme"):
        files += world.keys(role, ".pem") + world.keys(role, ".pub")
    return files


def test_class8_keys_rotate_with_a_damaged_keyring_changes_nothing(campaign: Campaign) -> None:
    """The example of issue 7: it used to publish 2.root.json and retire the old key."""
    for damage in (b"{", b'{"dev": true}', b'{"roles": {"root": 1}}', b"[]"):
        for role in ("timestamp", "root", "acme"):
            result = campaign.run(
                "keys/image/keyring.json", damage, ["keys", "rotate", role], role, must_fail=True
            )
            assert "key ring" in refused(result, role)
    assert not (campaign.home / "repo/metadata/2.root.json").exists()
    assert not (campaign.home / "keys/image/retired").exists()


def test_class8_every_mutating_command_checks_every_input_first(
    world: World, campaign: Campaign
) -> None:
    """Damage each input file in turn under each mutating command: a command either succeeds
    (it does not read that file) or fails with the repository and keys byte-identical."""
    rnd = random.Random(SEED)
    files = _input_files(world)
    refusals = 0
    for command in _commands(world, *MUTATING):
        for name in files:
            data = (world.home / name).read_bytes()
            for label, damage in _damages(rnd, data):
                result = campaign.run(name, damage, command, f"{command[:2]} {name}: {label}")
                refusals += result.exit_code != 0
                if damage is Special.MISSING and result.exit_code == 0 and name != "config.toml":
                    break  # the command does not need this file (an offline key, say)
    assert refusals > len(files) * len(MUTATING) * 3


def test_class8_repo_init_and_keys_init_check_every_input_first(
    world: World, tmp_path: Path
) -> None:
    """On a home with keys but no repository yet (no lock file either): ``repo init``."""
    template = tmp_path / "keys-only"
    ok(ota(template, "keys", "init", "--dev"))
    (template / "config.toml").write_text(CONFIG)
    campaign = Campaign(world, tmp_path / "work", template)
    rnd = random.Random(SEED)
    files = ["config.toml", "keys/image/keyring.json"]
    for role in ("root", "targets", "snapshot", "timestamp"):
        files += [
            str(p.relative_to(template)) for p in (template / "keys" / "image" / role).iterdir()
        ]
    for name in files:
        for label, damage in _damages(rnd, (template / name).read_bytes()):
            campaign.run(name, damage, ["repo", "init"], f"repo init {name}: {label}")
    (tmp_path / "empty").mkdir()
    fresh = Campaign(world, tmp_path / "fresh", tmp_path / "empty")
    for label, damage in _damages(rnd, CONFIG.encode()):
        if damage is not Special.MISSING:
            args = ["keys", "init", "--dev"]
            fresh.run("config.toml", damage, args, f"keys init: {label}")


def test_class8_payload_commands_leave_no_output_on_failure(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out" / "result.img"
    out.parent.mkdir()
    rnd = random.Random(SEED)
    data = world.payload.read_bytes()
    for label, damage in _damages(rnd, data):
        bad = tmp_path / "bad.payload"
        place(bad, damage)
        commands: list[list[str | os.PathLike[str]]] = [
            ["payload", "apply", bad, out, "--source", world.source]
        ]
        if damage is not Special.SPARSE:  # a 3 GiB diff is not hostile, only slow
            commands += [
                ["payload", "diff", bad, world.target, out],
                ["payload", "diff", world.source, bad, out],
            ]
        for args in commands:
            with deadline(DEADLINE, label):
                result = ota(tmp_path / "h", *args)
            if not clean(result, f"{args[:2]} {label}"):
                assert list(out.parent.iterdir()) == [], label
            for leftover in out.parent.iterdir():
                leftover.unlink()
        remove(bad)


# == class 4: unbounded reads and parsers ======================================================


def test_class4_unbounded_reads_special_files_everywhere(world: World, campaign: Campaign) -> None:
    """FIFOs (would hang), /dev/zero (would eat memory), directories, loops, 3 GiB files."""
    targets: list[tuple[str | Path, list[list[str]]]] = [
        ("config.toml", _commands(world, STATUS, PUBLISH)),
        ("keys/image/keyring.json", _commands(world, KEYS_LIST, ROTATE)),
        ("state/journal.json", _commands(world, REFRESH)),
        (world.manifest, _commands(world, PUBLISH)),
        (world.manifest.parent / "bcm.bin", _commands(world, PUBLISH)),
    ]
    targets += [(m, _commands(world, STATUS, LIST, REFRESH)) for m in world.metadata()]
    targets += [(k, _commands(world, REFRESH)) for k in world.keys("timestamp", ".pem")]
    targets += [(k, _commands(world, ROTATE)) for k in world.keys("root", ".pem")]
    for target, commands in targets:
        for special in SPECIALS:
            if special is Special.MISSING and target == "config.toml":
                continue  # no config.toml is the default config
            if special is Special.SPARSE and str(target).endswith(".bin"):
                continue  # a 3 GiB image is not hostile, only slow to publish
            for command in commands:
                label = f"{target} as {special.value}: {command[:2]}"
                if special is Special.MISSING and target == "state/journal.json":
                    campaign.run(target, special, command, label)
                else:
                    campaign.run(target, special, command, label, must_fail=True)


def test_class4_hostile_toml_shapes(world: World, campaign: Campaign) -> None:
    """Deep nesting, 4,301-digit integers, long dotted keys, long words: each refused (or
    read) quickly — the dotted-key check itself used to take minutes on a long word."""
    for label, text in mutate.toml_shapes():
        for target, command in (
            ("config.toml", _commands(world, STATUS)[0]),
            (world.manifest, _commands(world, PUBLISH)[0]),
        ):
            for body in (text, CONFIG + text if target == "config.toml" else text):
                started = time.monotonic()
                campaign.run(target, body.encode(), command, f"{target}: {label}", must_fail=True)
                assert time.monotonic() - started < 5, f"{label}: slow"


def test_class4_hostile_json_shapes(world: World, campaign: Campaign) -> None:
    for label, data in mutate.json_shapes():
        for name, commands in [
            ("keys/image/keyring.json", _commands(world, KEYS_LIST, ROTATE)),
            ("state/journal.json", _commands(world, REFRESH, PUBLISH)),
            *[(m, _commands(world, STATUS, REFRESH)) for m in world.metadata()],
        ]:
            for command in commands:
                campaign.run(name, data, command, f"{name}: {label}", must_fail=True)


# == class 5 and 6: numbers that are not numbers, strings that break later =====================

CONFIG_DOC: dict[str, Any] = {
    "repository": {
        "expiry_days": {"root": 365, "targets": 90, "delegated": 90, "snapshot": 1},
        "refresh_fraction": 0.5,
    },
    "deltas": {"sources": 1, "max_ratio": 0.9, "chunk_size": 65536, "effort": "fast", "jobs": 1},
    "serve": {
        "host": "127.0.0.1",
        "port": 8443,
        "tls_cert": "tls/server.pem",
        "tls_key": "tls/server.key",
        "refresh_interval": 600,
    },
}


def test_class5_numbers_that_are_not_numbers_in_config(world: World, campaign: Campaign) -> None:
    numbers = [
        ("repository", "expiry_days", "timestamp"),
        ("repository", "refresh_fraction"),
        ("deltas", "max_ratio"),
        ("deltas", "chunk_size"),
        ("deltas", "jobs"),
        ("deltas", "sources"),
        ("serve", "port"),
        ("serve", "refresh_interval"),
    ]
    for path in numbers:
        for value in ("nan", "+nan", "inf", "-inf", "1e40", "-1", "9223372036854775807", "1e308"):
            doc = json.loads(json.dumps(CONFIG_DOC))
            node = doc
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = "PLACEHOLDER"
            text = mutate.toml_dumps(doc).replace('"PLACEHOLDER"', value)
            line = refused(
                campaign.run(
                    "config.toml", text.encode(), _commands(world, PUBLISH)[0], f"{path}={value}"
                ),
                f"{path}={value}",
            )
            assert ".".join(path) in line, line


def test_class5_max_ratio_nan_publishes_nothing(world: World, campaign: Campaign) -> None:
    config = CONFIG.replace("max_ratio = 0.9", "max_ratio = nan").encode()
    line = campaign.run("config.toml", config, _commands(world, PUBLISH)[0], "nan", must_fail=True)
    assert "deltas.max_ratio" in refused(line, "nan")


def test_class5_largest_release_counter_then_a_default_one(
    world: World, campaign: Campaign, tmp_path: Path
) -> None:
    """release_counter = 2^63-1, then a release with a default counter: a clean error."""
    top = MANIFEST.format(version="1.1.0", counter=2**63 - 1)
    images = {n: (world.manifest.parent / n).read_bytes() for n in ("bcm.bin", "brakes.bin")}
    ok(ota(campaign.home, "release", "publish", "-q", write_manifest(tmp_path / "a", top, images)))
    campaign.clean = snapshot(campaign.home)
    default = top.replace("1.1.0", "1.2.0").replace(f"release_counter = {2**63 - 1}\n", "")
    for text in (default, top.replace("1.1.0", "1.2.0")):
        manifest = write_manifest(tmp_path / "b", text, images)
        line = refused(campaign.run(None, None, [*PUBLISH, manifest], "max"), "max")
        assert "largest release counter" in line or "goes backwards" in line, line
    too_big = top.replace(str(2**63 - 1), str(2**63)).replace("1.1.0", "1.3.0")
    manifest = write_manifest(tmp_path / "c", too_big, images)
    assert "release_counter" in refused(campaign.run(None, None, [*PUBLISH, manifest], "2^63"), "")


def test_class6_strings_that_break_later(world: World, campaign: Campaign) -> None:
    """A NUL, a 100,000-character value: refused when the file is read, and the error line
    quotes at most ~200 characters of it."""
    long = "Q" * 100_000
    for section, key in [
        ("serve", "host"),
        ("serve", "tls_cert"),
        ("serve", "tls_key"),
        ("deltas", "effort"),
    ]:
        for value in ("a\0b", long[:6000], "\0"):  # config.toml holds at most 64 KiB
            doc = json.loads(json.dumps(CONFIG_DOC))
            doc[section][key] = value
            result = campaign.run(
                "config.toml", mutate.toml_dumps(doc).encode(), STATUS, f"{key}={value[:4]!r}"
            )
            line = refused(result, key)
            assert f"{section}.{key}" in line and "Q" * 201 not in line, line
    manifest = world.manifest.read_text()
    for field, value in [
        ('bundle = "body"', f'bundle = "{long}"'),
        ('version = "1.1.0"', f'version = "{long}"'),
        ('ecu = "bcm"', f'ecu = "{long}"'),
        ('file = "bcm.bin"', f'file = "{long}"'),
        ('file = "bcm.bin"', 'file = "bcm\\u0000.bin"'),
        ('"bcm-hw"', f'"{long}"'),
        ('ecu = "bcm"', f'ecu = "bcm"\nname = "{long}"'),
        ('ecu = "bcm"', f'ecu = "bcm"\n{long} = 1'),
    ]:
        text = manifest.replace(field, value, 1)
        line = refused(
            campaign.run(world.manifest, text.encode(), [*PUBLISH, world.manifest], field), field
        )
        assert "Q" * 201 not in line, line


def test_class6_database_urls_are_refused_without_being_quoted(
    world: World, campaign: Campaign
) -> None:
    """A database URL this server cannot use: refused when config.toml is read, naming the
    key and never quoting the URL (it may hold a password)."""
    secret = "hunter2"
    values = [
        f'"mysql://ota:{secret}@db/fleet"',
        f'"postgresql://ota:{secret}@db/fleet"',
        f'"postgresql+asyncpg://ota:{secret}@db:99999/fleet"',
        f'"postgresql+asyncpg://ota:{secret}@db:port/fleet"',
        f'"postgresql+asyncpg://ota:{secret}@db/"',
        f'"postgresql+asyncpg://ota:{secret}@db/fleet\\u0000"',
        f'"postgresql+asyncpg://ota:{secret}@db/fleet\\n"',
        f'"postgresql+asyncpg://ota:{secret}@db/{"x" * 2000}"',
        '"sqlite+aiosqlite:///fleet.db"',
        '"sqlite+aiosqlite://"',
        '""',
        "5",
        "nan",
        "[]",
        "{ url = 1 }",
    ]
    for value in values:
        text = f"database_url = {value}\n{CONFIG}".encode()
        for args in (STATUS, ("db", "status")):
            label = f"database_url = {value[:40]}"
            line = refused(campaign.run("config.toml", text, args, label, must_fail=True), label)
            assert "database_url" in line and secret not in line, line


# == classes 4/5/6 as campaigns: mutations of every file ======================================


def _toml_campaign(
    campaign: Campaign,
    target: str | Path,
    doc: dict[str, Any],
    text: str,
    commands: list[list[str]],
) -> int:
    rnd = random.Random(SEED)
    n = 0
    cases: list[tuple[str, bytes]] = [
        (label, mutate.toml_dumps(d).encode())
        for label, d in mutate.structural(doc)
        if isinstance(d, dict)
    ]
    cases += list(mutate.byte_level(text.encode(), rnd, 240))
    for i, (label, data) in enumerate(cases):
        campaign.run(target, data, commands[i % len(commands)], f"{target}: {label}")
        n += 1
    return n


def test_config_toml_campaign(world: World, campaign: Campaign) -> None:
    commands = _commands(world, STATUS, STATUS, STATUS, PUBLISH, ROTATE, REFRESH)
    assert _toml_campaign(campaign, "config.toml", CONFIG_DOC, CONFIG, commands) > 700


MANIFEST_DOC: dict[str, Any] = {
    "bundle": "body",
    "version": "1.1.0",
    "images": [
        {"ecu": "bcm", "file": "bcm.bin", "hardware_ids": ["bcm-hw"]},
        {"ecu": "brakes", "file": "brakes.bin", "hardware_ids": ["acme-hw"], "release_counter": 2},
    ],
}


def test_manifest_campaign(world: World, campaign: Campaign) -> None:
    commands = _commands(world, PUBLISH)
    text = world.manifest.read_text()
    assert _toml_campaign(campaign, world.manifest, MANIFEST_DOC, text, commands) > 600


def _json_campaign(
    campaign: Campaign, name: str, commands: list[list[str]], *, structural_limit: int = 0
) -> int:
    rnd = random.Random(SEED)
    data = (campaign.home / name).read_bytes()
    doc = json.loads(data)
    cases = [
        (label, json.dumps(d, allow_nan=True).encode())
        for label, d in mutate.structural(doc, json_values=True)
    ]
    if structural_limit and len(cases) > structural_limit:
        cases = rnd.sample(cases, structural_limit)
    cases += list(mutate.byte_level(data, rnd, 80))
    for i, (label, mutated) in enumerate(cases):
        campaign.run(name, mutated, commands[i % len(commands)], f"{name}: {label}")
    return len(cases)


def test_keyring_campaign(world: World, campaign: Campaign) -> None:
    commands = _commands(world, KEYS_LIST, ROTATE, KEYS_LIST, DELEGATE, ROTATE_SUPPLIER)
    assert _json_campaign(campaign, "keys/image/keyring.json", commands) > 500


def test_class10_repository_metadata_campaign(world: World, campaign: Campaign) -> None:
    """Every metadata file the server loads (its own trust anchors): bit flips, truncation,
    wrong types, expired or foreign content — one line, never a traceback."""
    commands = _commands(world, STATUS, LIST, STATUS, REFRESH, LIST, STATUS, LIST, PUBLISH, ROTATE)
    total = 0
    for name in world.metadata():
        total += _json_campaign(campaign, name, commands, structural_limit=160)
    assert total > 1000


def test_key_file_campaign(world: World, campaign: Campaign) -> None:
    rnd = random.Random(SEED)
    commands = _commands(world, REFRESH, REFRESH, ROTATE, REFRESH, PUBLISH)
    n = 0
    for role in ("root", "targets", "snapshot", "timestamp", "acme"):
        for name in world.keys(role, ".pem") + world.keys(role, ".pub"):
            data = (world.home / name).read_bytes()
            for i, (label, mutated) in enumerate(mutate.byte_level(data, rnd, 14)):
                campaign.run(name, mutated, commands[i % len(commands)], f"{name}: {label}")
                n += 1
    assert n > 180


# == class 2 (server): paths built from file content ==========================================


def _journal(home: Path) -> dict[str, Any]:
    metadata = home / "repo/metadata"
    return {
        "created": [str(metadata / "9.targets.json")],
        "replaced": [
            {"path": str(metadata / "timestamp.json"), "backup": str(home / "state/backup/0.t")}
        ],
        "commit": {"path": str(metadata / "timestamp.json"), "sha256": "0" * 64},
    }


def test_class2_journal_paths_stay_inside_the_repository(
    campaign: Campaign, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    keyring = campaign.home / "keys/image/keyring.json"
    planted = [
        {"created": [str(victim)]},
        {"created": [str(keyring)]},
        {"created": [str(campaign.home / "repo/metadata/../../keys/image/keyring.json")]},
        {"created": ["relative/path"]},
        {"replaced": [{"path": str(victim), "backup": str(campaign.home / "state/backup/0.t")}]},
        {"replaced": [{"path": str(keyring), "backup": "/etc/hostname"}]},
        {"commit": {"path": str(victim), "sha256": "0" * 64}},
    ]
    for change in planted:
        journal = {**_journal(campaign.home), **change}
        data = json.dumps(journal).encode()
        for command in (REFRESH, ("keys", "rotate", "snapshot")):
            line = refused(
                campaign.run("state/journal.json", data, command, str(change), must_fail=True), ""
            )
            assert "journal" in line
        assert victim.read_text() == "precious" and keyring.exists()


def test_journal_campaign(campaign: Campaign) -> None:
    doc = _journal(campaign.home)
    (campaign.home / "state/backup").mkdir(parents=True)
    (campaign.home / "state/backup/0.t").write_bytes(
        (campaign.home / "repo/metadata/timestamp.json").read_bytes()
    )
    campaign.clean = snapshot(campaign.home)
    n = 0
    for label, mutated in mutate.structural(doc, json_values=True):
        campaign.run("state/journal.json", json.dumps(mutated).encode(), REFRESH, label)
        n += 1
    assert n > 250


def test_class2_key_ids_from_content_never_leave_the_key_store(campaign: Campaign) -> None:
    keyring = json.loads((campaign.home / "keys/image/keyring.json").read_bytes())
    for bad in ("../../../victim", "/etc/passwd", "a" * 63, "A" * 64, "0" * 64 + "\0"):
        doc = json.loads(json.dumps(keyring))
        doc["roles"]["timestamp"]["keyids"] = [bad]
        line = refused(
            campaign.run(
                "keys/image/keyring.json", json.dumps(doc).encode(), ROTATE, bad[:8], must_fail=True
            ),
            bad[:8],
        )
        assert "key ring" in line
    root = next((campaign.home / "repo/metadata").glob("*.root.json"))
    md = json.loads(root.read_bytes())
    md["signed"]["roles"]["timestamp"]["keyids"] = ["../../../../victim"]
    line = refused(
        campaign.run(root, json.dumps(md).encode(), ROTATE, "root keyid", must_fail=True), "root"
    )
    assert "key id" in line or "metadata" in line, line


# == class 7: decompression that trusts the data (subprocesses under a memory limit) ==========


def _payload(path: Path, target: bytes, ops: list[tuple[Op, bytes]], source: bytes = b"") -> Path:
    header = Header(
        chunk_size=max(op.dst_length for op, _ in ops),
        op_count=len(ops),
        target_size=len(target),
        target_sha256=hashlib.sha256(target).digest(),
        source_size=len(source),
        source_sha256=hashlib.sha256(source).digest() if source else bytes(32),
    )
    with open(path, "wb") as f:
        f.write(header.encode())
        for op, data in ops:
            f.write(op.encode())
            f.write(data)
    return path


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bombs(directory: Path) -> dict[str, tuple[Path, Path | None]]:
    """Payloads whose data lies about its size: (payload, source)."""
    target = bytes(4096)
    digest = hashlib.sha256(target).digest()
    zstd_bomb = zstandard.ZstdCompressor(level=3).compress(bytes(200 << 20))
    claims = zstandard.ZstdCompressor(level=3).compressobj(size=1 << 40)
    tib = claims.compress(bytes(100)) + claims.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    xz_bomb = lzma.compress(bytes(200 << 20), format=lzma.FORMAT_XZ, preset=1)
    out: dict[str, tuple[Path, Path | None]] = {}
    for name, codec, data in [
        ("zstd 200 MiB in a 4 KiB op", Codec.ZSTD, zstd_bomb),
        ("zstd frame claiming 1 TiB", Codec.ZSTD, tib),
        ("xz 200 MiB in a 4 KiB op", Codec.XZ, xz_bomb),
    ]:
        op = Op(OpType.REPLACE, 0, 4096, digest, codec, len(data))
        out[name] = (_payload(directory / f"{len(out)}.payload", target, [(op, data)]), None)
    # A bsdiff op of 8 MiB whose decoded data is millions of empty triples (3 bytes each):
    # before the cap on triples, decoding built a Python tuple per triple (gigabytes).
    length = 8 << 20
    count = (length - 8) // 3
    decoded = _varint(count) + bytes(3 * count) + bytes(length)
    packed = struct.pack(">I", len(decoded)) + zstandard.ZstdCompressor().compress(decoded)
    source = directory / "bsdiff.source"
    source.write_bytes(bytes(4096))
    src_sha = hashlib.sha256(bytes(4096)).digest()
    big_target = bytes(length)
    op = Op(
        OpType.SOURCE_BSDIFF,
        0,
        length,
        hashlib.sha256(big_target).digest(),
        Codec.ZSTD,
        len(packed),
        0,
        4096,
        src_sha,
    )
    path = _payload(directory / "bsdiff.payload", big_target, [(op, packed)], bytes(4096))
    out["bsdiff op of millions of triples"] = (path, source)
    return out


def _limited(
    args: Sequence[str | os.PathLike[str]], home: Path
) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-m", "ota_server", "--home", str(home), *map(str, args)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OTA_DEBUG": ""},
        check=False,
    )


def _refused_process(proc: subprocess.CompletedProcess[str], label: str) -> str:
    cases[0] += 1
    assert proc.returncode != 0, f"{label}: accepted"
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, (
        f"{label}: {proc.stderr[-2000:]}"
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and len(errors[0]) <= ERROR_LINE, f"{label}: {proc.stderr[-2000:]}"
    return errors[0]


def test_class7_decompression_bombs_under_a_memory_limit(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    cases = _bombs(tmp_path)
    calls = [
        (name, ["payload", "apply", p, out, *(["--source", s] if s else [])])
        for name, (p, s) in cases.items()
    ]
    calls.append(("sanity: a good payload applies", []))
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(
            _limited, ["payload", "apply", world.payload, out, "--source", world.source], tmp_path
        )
        results = list(pool.map(lambda c: (c[0], _limited(c[1], tmp_path)), calls[:-1]))
        assert good.result().returncode == 0, good.result().stderr
    for name, proc in results:
        line = _refused_process(proc, name)
        assert "MemoryError" not in line, line
    out.unlink()


def test_class4_huge_files_under_a_memory_limit(world: World, tmp_path: Path) -> None:
    """3 GiB (sparse) files and hostile TOML in a subprocess with 256 MiB of address space."""
    home = tmp_path / "home"
    shutil.copytree(world.home, home, symlinks=True)
    manifest = tmp_path / "m" / "release.toml"
    shutil.copytree(world.manifest.parent, manifest.parent)
    timestamp = home / "repo/metadata/timestamp.json"
    plan: list[tuple[Path, Content, list[str | os.PathLike[str]]]] = [
        (home / "config.toml", Special.SPARSE, ["repo", "status"]),
        (manifest, Special.SPARSE, ["release", "publish", "-q", manifest]),
        (manifest.parent / "bcm.bin", Special.DEV_ZERO, ["release", "publish", "-q", manifest]),
        (home / "keys/image/keyring.json", Special.SPARSE, ["keys", "list"]),
        (timestamp, Special.SPARSE, ["repo", "status"]),
        (home / "state/journal.json", Special.SPARSE, ["repo", "refresh"]),
        (home / world.keys("timestamp", ".pem")[0], Special.SPARSE, ["repo", "refresh", "--force"]),
        (home / "config.toml", b"x = " + b"[" * 60_000, ["repo", "status"]),
        (home / "config.toml", ".".join(["k"] * 30_000).encode() + b" = 1", ["repo", "status"]),
        (manifest, b"bundle = " + b"9" * 200_000, ["release", "publish", "-q", manifest]),
    ]

    # Each case gets its own copy of the home, so that two run at a time.
    def attempt(case: tuple[int, tuple[Path, Content, list[str | os.PathLike[str]]]]) -> None:
        i, (path, content, args) = case
        own = tmp_path / f"case{i}"
        shutil.copytree(home, own / "home", symlinks=True)
        shutil.copytree(manifest.parent, own / "m")
        moved = own / path.relative_to(tmp_path)
        place(moved, content)
        args = [own / Path(a).relative_to(tmp_path) if isinstance(a, Path) else a for a in args]
        before = snapshot(own / "home")
        _refused_process(_limited(args, own / "home"), f"{path.name} as {content!s:.40}")
        assert snapshot(own / "home") == before, path
        shutil.rmtree(own)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(attempt, enumerate(plan)))


# == class 11: unbounded resources from arguments =============================================


def test_class11_worker_count_is_bounded(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.payload"
    for jobs in ("200", "65", "0", "-1", "1e3", "nan"):
        args = ["payload", "diff", "-j", jobs, world.source, world.target, out]
        assert "--jobs" in refused(ota(tmp_path, *args), jobs)
    seen: list[int] = []
    real = generate_module.ProcessPoolExecutor

    def recording(max_workers: int, **kw: Any) -> Any:
        seen.append(max_workers)
        return real(max_workers, **kw)

    monkeypatch.setattr(generate_module, "ProcessPoolExecutor", recording)
    args = ["payload", "diff", "-q", "-j", "64", "--chunk-size", "16384"]
    ok(ota(tmp_path, *args, world.source, world.target, out))
    assert seen and max(seen) <= (os.cpu_count() or 1), seen
    # No more workers than chunks: a one-chunk diff runs in-process.
    seen.clear()
    args[-1] = "4194304"
    ok(ota(tmp_path, *args, world.source, world.target, out))
    assert seen == []
    for jobs, chunks in ((64, 3), (None, 1), (1, 100), (2, 0)):
        assert 1 <= workers(jobs, chunks) <= max(1, min(chunks, os.cpu_count() or 1))
    with pytest.raises(ConfigError, match=r"deltas\.jobs"):
        parse_config(tmp_path, "[deltas]\njobs = 200\n")


# == CLI arguments =============================================================================

HOSTILE_ARGS = [
    "",
    "\0",
    "a\0b",
    "x" * 100_000,
    "-1",
    "0",
    "99999999999999999999999",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "../../../etc/passwd",
    "/dev/zero",
    "/proc/self/mem",
    "é\u202e",
    "--",
]


def _argument_slots(world: World, out: Path) -> list[list[str | os.PathLike[str]]]:
    s, t, p = world.source, world.target, world.payload
    return [
        ["keys", "rotate", "{}"],
        ["keys", "rotate", "timestamp", "--keys", "{}"],
        ["keys", "rotate", "timestamp", "--threshold", "{}"],
        ["keys", "init", "--root-keys", "{}"],
        ["repo", "delegate", "{}", "--hardware-id", "hw"],
        ["repo", "delegate", "sup", "--hardware-id", "{}"],
        ["repo", "delegate", "sup", "--path", "{}"],
        ["repo", "delegate", "sup", "--hardware-id", "hw", "--keys", "{}"],
        ["repo", "refresh", "{}"],
        ["release", "publish", "{}"],
        ["release", "list", "--bundle", "{}"],
        ["payload", "diff", "{}", t, out],
        ["payload", "diff", s, "{}", out],
        ["payload", "diff", s, t, OUT],
        ["payload", "diff", "-j", "{}", s, t, out],
        ["payload", "diff", "--chunk-size", "{}", s, t, out],
        ["payload", "diff", "--effort", "{}", s, t, out],
        ["payload", "apply", "{}", out],
        ["payload", "apply", p, OUT, "--source", s],
        ["payload", "apply", p, out, "--source", "{}"],
        ["payload", "info", "{}"],
        ["vehicle", "provision", "{}", "--ecu", "HV-1:bcm-hw", "--out", out.parent / "kit"],
        ["vehicle", "provision", "VIN9", "--ecu", "{}", "--out", out.parent / "kit"],
        ["vehicle", "provision", "--from-csv", "{}", "--out", out.parent / "kits"],
        [
            "vehicle",
            "provision",
            "VIN9",
            "--ecu",
            "HV-1:bcm-hw",
            "--factory",
            "{}",
            "--out",
            out.parent / "kit",
        ],
        ["vehicle", "show", "{}"],
        ["vehicle", "revoke", "{}"],
        ["vehicle", "list", "--limit", "{}"],
        ["assign", "{}", "body@1.0.0"],
        ["assign", "VIN9", "{}"],
        ["unassign", "{}"],
        ["token", "create", "{}", "--role", "read-only"],
        ["token", "create", "t", "--role", "{}"],
        ["token", "revoke", "{}"],
    ]


OUT = "{out}"  # an output argument: only ever given values inside tmp_path


def _inside(value: str, root: Path) -> bool:
    if "\0" in value or len(value) > 4096 or not value:
        return True  # refused before any path is used
    return Path(os.path.abspath(value)).is_relative_to(root)


def test_hostile_arguments(
    world: World, campaign: Campaign, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = tmp_path / "cwd"  # relative arguments land here, whatever they are
    sandbox.mkdir()
    monkeypatch.chdir(sandbox)
    out = tmp_path / "out" / "o.img"
    out.parent.mkdir()
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    # Outputs get values that cannot land outside tmp_path: this may run as root, and an
    # output of ../../../etc/passwd would be written for real (as the operator asked).
    safe_outputs = ["", "\0", "a\0b", "x" * 100_000, "0", "nan", "é\u202e", "--"]
    safe_outputs += [str(fifo), str(folder), str(world.target)]
    for slot in _argument_slots(world, out):
        for value in safe_outputs if OUT in slot else HOSTILE_ARGS:
            args = [value if a in ("{}", OUT) else a for a in slot]
            if OUT in slot:
                assert _inside(value, tmp_path) or value == str(world.target), value
            result = campaign.run(None, None, args, f"{slot[:3]} {value[:10]!r}")
            if result.exit_code == 0:
                for leftover in out.parent.iterdir():
                    if leftover.is_dir():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink()
            line = result.stderr
            assert "x" * 201 not in line, slot
    # --home itself, and serve's options on a home without a repository (never serves)
    empty = tmp_path / "empty"
    empty.mkdir()
    for value in HOSTILE_ARGS:
        for args in (
            ["--home", value, "repo", "status"],
            ["serve", "--port", value],
            ["serve", "--host", value],
            ["serve", "--refresh-interval", value],
            ["serve", "--tls-cert", value, "--tls-key", value],
        ):
            with deadline(DEADLINE, str(args)):
                result = ota(empty, *args) if args[0] != "--home" else _ota_raw(args)
            refused(result, f"{args[:2]} {value[:10]!r}")
    assert list(empty.iterdir()) == []


def _ota_raw(args: Sequence[str]) -> Result:
    from click.testing import CliRunner

    from ota_server.cli.main import main

    return CliRunner().invoke(main, list(args))


@FAST
@given(name=st.text(max_size=300), option=st.sampled_from(["role", "delegate", "hwid", "path"]))
def test_hypothesis_names(campaign: Campaign, name: str, option: str) -> None:
    args = {
        "role": ["keys", "rotate", name],
        "delegate": ["repo", "delegate", name, "--hardware-id", "hw"],
        "hwid": ["repo", "delegate", "sup", "--hardware-id", name],
        "path": ["repo", "delegate", "sup", "--path", name],
    }[option]
    campaign.run(None, None, args, f"{option}={name[:20]!r}")


# == payload files ============================================================================


def _payload_fields(data: bytes) -> list[tuple[str, bytes]]:
    """The payload with one header or op-record field set to each boundary value."""
    out = []
    # version, flags, chunk size, op count, reserved, target size, source size
    header_fields = [(8, "H"), (10, "H"), (12, "I"), (16, "I"), (20, "I"), (24, "Q"), (64, "Q")]
    values = [0, 1, 4095, 4096, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]
    for offset, kind in header_fields:
        size = struct.calcsize(">" + kind)
        for value in values:
            if value < 1 << (8 * size):
                patched = data[:offset] + struct.pack(">" + kind, value) + data[offset + size :]
                out.append((f"header@{offset}={value}", patched))
    op_fields = [(0, "B"), (1, "B"), (2, "H"), (4, "I"), (8, "Q"), (16, "I"), (20, "I"), (24, "Q")]
    for record in (128, 128 + 96 + struct.unpack_from(">I", data, 128 + 4)[0]):
        for offset, kind in op_fields:
            size = struct.calcsize(">" + kind)
            for value in values:
                if value < 1 << (8 * size) and record + offset + size <= len(data):
                    at = record + offset
                    patched = data[:at] + struct.pack(">" + kind, value) + data[at + size :]
                    out.append((f"op@{record}+{offset}={value}", patched))
    return out


def test_payload_campaign(world: World, tmp_path: Path) -> None:
    """Every payload the server reads (``ota payload apply``/``info``): damaged, hostile fields."""
    rnd = random.Random(SEED)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    expected = world.target.read_bytes()
    n = 0
    for payload, source in ((world.payload, world.source), (world.full_payload, None)):
        data = payload.read_bytes()
        cases = list(mutate.byte_level(data, rnd, 200)) + _payload_fields(data)
        for i, (label, mutated) in enumerate(cases):
            bad = tmp_path / "bad.payload"
            bad.write_bytes(mutated)
            out = out_dir / "o.img"
            command: list[str | os.PathLike[str]]
            if i % 3 == 2:
                command = ["payload", "info", bad, "--json"]
            else:
                command = ["payload", "apply", bad, out, *(["--source", source] if source else [])]
            with deadline(DEADLINE, label):
                result = ota(tmp_path / "h", *command)
            if clean(result, label) and command[1] == "apply":
                assert out.read_bytes() == expected, f"{label}: built something else"
            elif command[1] == "apply":
                assert list(out_dir.iterdir()) == [], label
            for leftover in out_dir.iterdir():
                leftover.unlink()
            n += 1
    assert n > 600


@FAST
@given(
    chunk=st.integers(0, 2**32 - 1),
    count=st.integers(0, 2**32 - 1),
    size=st.integers(0, 2**64 - 1),
    op_type=st.integers(0, 255),
    codec=st.integers(0, 255),
    data_length=st.integers(0, 2**32 - 1),
    dst_length=st.integers(0, 2**32 - 1),
    src=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
)
def test_hypothesis_payload_fields(
    tmp_path: Path,
    chunk: int,
    count: int,
    size: int,
    op_type: int,
    codec: int,
    data_length: int,
    dst_length: int,
    src: tuple[int, int],
) -> None:
    header = struct.pack(
        ">8sHHIIIQ32sQ32s24s",
        b"OTAPAYLD",
        1,
        0,
        chunk,
        count,
        0,
        size,
        bytes(32),
        src[0] % 4096,
        b"\1" * 32 if src[0] % 4096 else bytes(32),
        bytes(24),
    )
    record = struct.pack(
        ">BBHIQIIQ32s32s",
        op_type,
        codec,
        0,
        data_length,
        0,
        dst_length,
        src[1],
        src[0],
        bytes(32),
        bytes(32),
    )
    path = tmp_path / "p"
    path.write_bytes(header + record + bytes(min(data_length, 1 << 16)))
    source = tmp_path / "s"
    source.write_bytes(bytes(4096))
    label = f"{chunk} {count} {size} {op_type} {codec} {data_length} {dst_length} {src}"
    with deadline(DEADLINE, label):
        refused(ota(tmp_path, "payload", "apply", path, tmp_path / "o", "--source", source), label)
        clean(ota(tmp_path, "payload", "info", path), label)  # info checks structure only
    assert not (tmp_path / "o").exists()


# == ota serve: configuration that only serving reads (subprocesses: success would block) =====


def _serve_refuses(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ota_server", "--home", str(home), "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "OTA_DEBUG": "", **(env or {})},
        check=False,
    )
    return _refused_process(proc, " ".join(args))


def test_serve_refuses_hostile_tls_material(world: World, tmp_path: Path) -> None:
    """A FIFO (OpenSSL would block forever), /dev/zero, garbage, an encrypted key."""
    home = tmp_path / "home"
    shutil.copytree(world.home, home, symlinks=True)
    (home / "config.toml").unlink()
    good = home / "tls"
    from tests.helpers import make_tls

    tls = make_tls(good)
    rnd = random.Random(SEED)
    pem = tls.cert.read_bytes()
    encrypted = good / "encrypted.key"
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(tls.key.read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    bad = tmp_path / "bad.pem"
    contents: list[Content] = [
        Special.FIFO,
        Special.DEV_ZERO,
        next(d for label, d in mutate.byte_level(pem, rnd, 3) if label.startswith("flip")),
    ]

    def attempt(args: tuple[str, ...]) -> str:
        return _serve_refuses(home, *args)

    plans: list[tuple[str, ...]] = [("--tls-cert", str(tls.cert), "--tls-key", str(encrypted))]
    plans += [("--tls-cert", str(tls.cert))]
    with ThreadPoolExecutor(2) as pool:
        for content in contents:
            place(bad, content)
            lines = list(
                pool.map(
                    attempt,
                    [
                        ("--tls-cert", str(bad), "--tls-key", str(tls.key)),
                        ("--tls-cert", str(tls.cert), "--tls-key", str(bad)),
                    ],
                )
            )
            assert all("TLS" in line or "--tls" in line for line in lines), lines
        for line in pool.map(attempt, plans):
            assert "TLS" in line, line
    remove(bad)


# == ota serve: requests =======================================================================


def _config(home: Path, database_url: str | None = None) -> ServerConfig:
    return ServerConfig(layout=Layout(home), database_url=database_url)


def run_app(
    home: Path,
    scenario: Callable[[TestClient[web.Request, web.Application]], Any],
    reports: ReportLimits | None = None,
    database_url: str | None = None,  # None: the home's own (SQLite in state/)
) -> Any:
    async def main() -> Any:
        app = create_app(_config(home, database_url), reports=reports)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(main())


def _report(i: int = 0, **fields: Any) -> dict[str, Any]:
    base = {
        "id": f"{i:032x}",
        "vehicle_id": "VIN0001",
        "ecu": "bcm-1",
        "event": "commit",
        "time": 1_700_000_000.5,
        "bundle": "body",
        "target": "bcm-hw/bcm-1.1.0.bin",
        "version": "1.1.0",
        "release_counter": 2,
        "installed": "1.1.0",
        "error": None,
        "kind": None,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


EVENTS = "/api/v1/vehicles/VIN0001/events"


def _no_5xx(status: int, label: str) -> None:
    cases[0] += 1
    assert status < 500, f"{label}: {status}"


def test_class9_events_bodies_never_5xx(world: World, tmp_path: Path, database_url: str) -> None:
    """Wrong types, deep nesting, huge numbers, missing fields, garbage: 4xx, never 5xx."""
    rnd = random.Random(SEED)
    valid = _report(1, error="x", kind="transport", event="update_failed")
    bodies: list[tuple[str, bytes]] = [
        (label, json.dumps(doc, allow_nan=True).encode())
        for label, doc in mutate.structural(valid, json_values=True)
    ]
    bodies += list(mutate.byte_level(json.dumps(valid).encode(), rnd, 200))
    bodies += list(mutate.json_shapes())
    bodies += [
        ("issue example", b'{"event": [], "id": "1"}'),
        ("too large", json.dumps(_report(2, error="e" * 30000)).encode()),
        ("error too long", json.dumps(_report(3, error="e" * 1001)).encode()),
        ("other vehicle", json.dumps(_report(4, vehicle_id="VIN0002")).encode()),
        ("unknown field", json.dumps({**_report(5), "colour": 1}).encode()),
    ]

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        stored = 0
        for label, body in bodies:
            response = await client.post(EVENTS, data=body)
            _no_5xx(response.status, label)
            assert response.status in (200, 202, 400, 413), (label, response.status)
            stored += response.status == 202
        response = await client.post(EVENTS, json=valid)
        assert response.status in (200, 202)
        response = await client.get(EVENTS)
        assert response.status == 200
        got = await response.json()
        assert any(r["id"] == valid["id"] for r in got)
        for record in got:  # every stored record follows the one schema
            Report.from_dict({k: v for k, v in record.items() if k != "received"})
        assert len(got) <= stored + 1

    run_app(tmp_path, scenario, database_url=database_url)


@FAST
@given(
    body=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=40)
        | st.sampled_from(["commit", "VIN0001", "0" * 32, "bcm-1"]),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from([*Report.__dataclass_fields__, "x"]) | st.text(max_size=5),
                children,
                max_size=8,
            )
        ),
        max_leaves=20,
    )
)
def test_hypothesis_events_bodies(tmp_path: Path, database_url: str, body: Any) -> None:
    data = json.dumps(body, allow_nan=True).encode()

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        response = await client.post(EVENTS, data=data)
        _no_5xx(response.status, data[:80].decode())
        response = await client.get(EVENTS)
        _no_5xx(response.status, "get")

    run_app(tmp_path, scenario, database_url=database_url)


def test_class9_damaged_old_report_logs_are_imported_as_far_as_readable(
    tmp_path: Path, database_url: str
) -> None:
    """The old JSON-lines store, damaged: a torn last line (a kill mid-append), garbage,
    foreign JSON, a FIFO, a symlink to /dev/zero, a directory. The import at start takes what
    is readable, never hangs, and later requests work."""
    log = tmp_path / "state/events/VIN0001.jsonl"
    good = [json.dumps({**_report(i), "received": 1.0}) + "\n" for i in range(3)]
    damages: list[tuple[str, Content]] = [
        ("torn last line", ("".join(good) + good[0][:40]).encode()),
        ("garbage line", (good[0] + "\x00\xff garbage\n" + good[1]).encode()),
        ("not a report", (good[0] + '{"event": []}\n[1]\n1\n"x"\nnull\n' + good[1]).encode()),
        ("deep line", (good[0] + "[" * 5000 + "\n" + good[1]).encode()),
        ("huge line", (good[0] + "9" * 100_000 + "\n" + good[1]).encode()),
        ("duplicate ids", (good[0] + good[0] + good[1]).encode()),
        ("no received", (json.dumps(_report(7)) + "\n" + good[1]).encode()),
        ("bad received", (good[0].replace("1.0}", "1e300}") + good[1]).encode()),
        ("fifo", Special.FIFO),
        ("dev zero", Special.DEV_ZERO),
        ("directory", Special.DIRECTORY),
        ("loop", Special.LOOP),
        ("sparse", Special.SPARSE),
        ("binary", random.Random(SEED).randbytes(50_000)),
    ]
    readable = {"torn last line", "garbage line", "not a report", "huge line", "deep line"}
    for label, damage in damages:
        place(log, damage)

        async def scenario(
            client: TestClient[web.Request, web.Application], label: str = label
        ) -> list[str]:
            for _ in range(2):
                response = await client.get(EVENTS)
                _no_5xx(response.status, label)
                assert response.status == 200, label
                await response.json()
                response = await client.post(EVENTS, json=_report(99))
                _no_5xx(response.status, label)
            response = await client.get(EVENTS)
            return [r["id"] for r in await response.json()]

        with deadline(DEADLINE, label):
            ids = run_app(tmp_path, scenario, database_url=database_url)
        assert ids.count(_report(99)["id"]) == 1, (label, ids)
        if label in readable:
            assert _report(0)["id"] in ids and _report(1)["id"] in ids, (label, ids)
        assert not log.parent.exists(), label  # moved aside: imported once
        shutil.rmtree(tmp_path / "state/events.imported")


def test_special_files_in_the_served_repository(world: World, tmp_path: Path) -> None:
    """A FIFO, a device link, a folder or a loop where a served file should be: 404, no hang."""
    home = tmp_path / "home"
    shutil.copytree(world.home, home, symlinks=True)
    target = next((home / "repo/targets/bcm-hw").iterdir())
    for path in (home / "repo/metadata/timestamp.json", target):
        url = "/" + str(path.relative_to(home))
        for special in (Special.FIFO, Special.DEV_ZERO, Special.DIRECTORY, Special.LOOP):
            place(path, special)

            async def scenario(
                client: TestClient[web.Request, web.Application], url: str = url
            ) -> None:
                for method in ("GET", "HEAD"):
                    response = await client.request(method, url, headers={"Range": "bytes=0-"})
                    _no_5xx(response.status, url)
                    assert response.status == 404, (url, response.status)

            with deadline(DEADLINE, f"{url} as {special.value}"):
                run_app(home, scenario)
            remove(path)


def test_class9_caps_per_vehicle_and_overall(tmp_path: Path, database_url: str) -> None:
    limits = ReportLimits(per_vehicle=5, vehicles=3, total_bytes=64 << 10)

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        for i in range(8):  # per vehicle: the newest 5 are kept
            assert (await client.post(EVENTS, json=_report(i))).status == 202
        assert (await client.post(EVENTS, json=_report(7))).status == 200  # duplicate
        got = await (await client.get(EVENTS)).json()
        assert [r["id"] for r in got] == [_report(i)["id"] for i in range(3, 8)]
        for vin in ("VIN0002", "VIN0003"):
            url = f"/api/v1/vehicles/{vin}/events"
            assert (await client.post(url, json=_report(1, vehicle_id=vin))).status == 202
        url = "/api/v1/vehicles/VIN0004/events"  # a fourth vehicle: refused, nothing stored
        response = await client.post(url, json=_report(1, vehicle_id="VIN0004"))
        assert response.status == 507, response.status
        assert await (await client.get(url)).json() == []
        # The overall byte cap: reports with long error texts fill 64 KiB.
        statuses = []
        for i in range(200):
            body = _report(100 + i, vehicle_id="VIN0002", event="update_failed", error="é" * 900)
            statuses.append(
                (await client.post("/api/v1/vehicles/VIN0002/events", json=body)).status
            )
        assert 507 not in statuses  # one vehicle only replaces its own oldest reports
        assert await _stored_bytes(client) <= 64 << 10

    run_app(tmp_path, scenario, limits, database_url)
    tight = ReportLimits(per_vehicle=1000, vehicles=10, total_bytes=8 << 10)

    async def full(client: TestClient[web.Request, web.Application]) -> None:
        statuses = [
            (await client.post(EVENTS, json=_report(1000 + i, error="e" * 900))).status
            for i in range(20)
        ]
        assert 202 in statuses and statuses[-1] == 507, statuses
        assert await _stored_bytes(client) <= 8 << 10

    _delete_all_events(database_url)
    run_app(tmp_path, full, tight, database_url)


async def _stored_bytes(client: TestClient[web.Request, web.Application]) -> int:
    async with client.app[DATABASE].sessions() as session:
        return int((await session.execute(select(func.sum(Event.size)))).scalar_one() or 0)


def _delete_all_events(database_url: str) -> None:
    async def empty() -> None:
        async with opened(make_url(database_url)) as database, database.sessions() as session:
            await session.execute(delete(Event))
            await session.commit()

    asyncio.run(empty())


def test_events_accepts_exactly_the_shared_report_schema(tmp_path: Path, database_url: str) -> None:
    full = _report(5, error="disk", kind="device", event="rollback", bundle="body")

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        assert (await client.post(EVENTS, json=full)).status == 202
        got = await (await client.get(EVENTS)).json()
        assert {k: v for k, v in got[0].items() if k != "received"} == full
        for extra in ({"colour": 1}, {"kind": "weather"}, {"event": "installed"}):
            assert (await client.post(EVENTS, json={**_report(6), **extra})).status == 400

    run_app(tmp_path, scenario, database_url=database_url)


@FAST
@given(
    segment=st.text(max_size=80),
    route=st.sampled_from(
        [
            "/repo/metadata/{}",
            "/repo/targets/{}",
            "/repo/targets/bcm-hw/{}",
            EVENTS + "{}",
            "/api/v1/vehicles/{}/events",
            "/{}",
            "/repo/{}",
        ]
    ),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
)
def test_hypothesis_paths(
    world: World, database_url: str, segment: str, route: str, method: str
) -> None:
    path = route.format(urllib.parse.quote(segment, safe=""))

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        response = await client.request(method, path, data=b"{}" if method == "POST" else None)
        _no_5xx(response.status, f"{method} {path}")

    run_app(world.home, scenario, database_url=database_url)


@FAST
@given(
    headers=st.dictionaries(
        st.sampled_from(["Range", "If-Range", "If-None-Match", "If-Modified-Since"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
        | st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-5, 2**70), st.integers(-5, 2**70))
        | st.builds(lambda a: f"bytes=-{a}", st.integers(0, 2**70)),
        max_size=3,
    )
)
def test_hypothesis_conditional_headers(world: World, headers: dict[str, str]) -> None:
    timestamp = world.home / "repo/metadata/timestamp.json"
    size = timestamp.stat().st_size

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        response = await client.get("/repo/metadata/timestamp.json", headers=headers)
        body = await response.read()
        _no_5xx(response.status, str(headers))
        assert response.status in (200, 206, 304, 416), response.status
        if response.status == 206:
            first, last = response.headers["Content-Range"].split()[1].split("/")[0].split("-")
            assert len(body) == int(last) - int(first) + 1 <= size

    run_app(world.home, scenario)


def test_raw_requests_against_the_real_server(world: World, tmp_path: Path) -> None:
    """Malformed HTTP at the socket: 4xx or a closed connection, never a 5xx or a hang."""
    home = tmp_path / "home"
    shutil.copytree(world.home, home, symlinks=True)
    (home / "config.toml").unlink()
    raw = [
        b"GET /repo/metadata/%00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /repo/metadata/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /repo/targets/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(2000)) + b"\r\n",
        b"GET /repo/metadata/timestamp.json HTTP/1.1\r\nHost: x\r\nRange: bytes="
        + b"9" * 10000
        + b"-\r\n\r\n",
        b"GET /repo/metadata/timestamp.json HTTP/1.1\r\nHost: x\r\nIf-Range: \xff\xfe\r\n"
        b"Range: bytes=0-1\r\n\r\n",
        b"POST " + EVENTS.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST " + EVENTS.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
        b"POST " + EVENTS.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n",
        b"POST "
        + EVENTS.encode()
        + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"4000\r\n"
        + b"[" * 0x4000
        + b"\r\n" * 2
        + b"4000\r\n"
        + b"[" * 0x4000
        + b"\r\n0\r\n\r\n",
        b"POST " + EVENTS.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{",
        b"BREW /repo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /repo/metadata/timestamp.json HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100),  # a TLS hello
        b"GET\r\n\r\n",
        bytes(random.Random(SEED).randbytes(4096)),
    ]
    with serve(home, "--no-refresh") as url:
        parts = urllib.parse.urlsplit(url)
        for request in raw:
            status = _raw_status(parts.hostname or "", parts.port or 0, request)
            _no_5xx(status, repr(request[:60]))
        # and the server still works
        status = _raw_status(
            parts.hostname or "", parts.port or 0, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert status == 200


def _raw_status(host: str, port: int, request: bytes) -> int:
    """The status of the server's reply (0: it closed the connection or waits for more)."""
    with socket.create_connection((host, port), timeout=1.5) as s:
        with contextlib.suppress(OSError):  # it may close early on a hopeless request
            s.sendall(request)
        reply = b""
        with contextlib.suppress(OSError):  # reset, or a timeout: waiting for a promised body
            while len(reply) < 12 and (chunk := s.recv(4096)):
                reply += chunk
    if not reply.startswith(b"HTTP/"):
        return 0
    return int(reply.split()[1])


# == pure parsers, property-based =============================================================


@FAST
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=4),
        max_leaves=12,
    )
)
def test_hypothesis_keyring_and_journal_schemas(doc: Any) -> None:
    cases[0] += 1
    for candidate in (doc, {"roles": doc}, {"dev": False, "roles": {"root": doc}}):
        with contextlib.suppress(FormatError):
            parse_keyring(candidate)
    for candidate in (doc, {"created": doc, "replaced": [], "commit": doc}):
        with contextlib.suppress(FormatError):
            journal_from_data(candidate, Path("/srv/repo"), Path("/srv/state/backup"))


@FAST
@given(text=st.text(max_size=400) | st.sampled_from([t for _, t in mutate.toml_shapes()]))
def test_hypothesis_config_text(text: str) -> None:
    cases[0] += 1
    with contextlib.suppress(ConfigError):
        config = parse_config(Path("/srv/ota"), text)
        for days in config.expiry.days.values():
            assert math.isfinite(days) and days > 0
        assert math.isfinite(config.deltas.max_ratio)


# == signed version manifests ====================================================================


@pytest.fixture(scope="module")
def fleet_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A home with one provisioned two-ECU vehicle, and a valid manifest of it."""
    from ota_client.agent.manifest import ManifestMaker
    from ota_client.agent.records import VehicleState
    from ota_client.config import load_config as load_client_config

    root = tmp_path_factory.mktemp("fleet")
    home = make_home(root, EXAMPLES / "infotainment-2.0.0.toml")
    car = root / "car"
    ok(ota(home, "vehicle", "provision", "VIN0001", "--ecu", "HU-1:hu-imx8", "--ecu",
           "TCU-1:tcu-9150", "--out", car))  # fmt: skip
    maker = ManifestMaker(load_client_config(car / "client.toml"))
    return home, maker.make(VehicleState(), 1_800_000_000.0)


def _mutations(doc: Any) -> st.SearchStrategy[Any]:
    """``doc`` with one value anywhere in it replaced by hostile JSON."""
    paths: list[tuple[Any, ...]] = []

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, (*path, key))
        elif isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, (*path, i))

    walk(doc, ())
    hostile = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20)
        | st.sampled_from(["", "VIN0001", "HU-1", "0" * 64, 2**64, -1]),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=8,
    )  # fmt: skip

    def replace(path: tuple[Any, ...], value: Any) -> Any:
        copy = json.loads(json.dumps(doc))
        if not path:
            return value
        target = copy
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return copy

    return st.builds(replace, st.sampled_from(paths), hostile)


def test_manifest_bodies_are_refused_cleanly(
    fleet_home: tuple[Path, bytes], tmp_path: Path
) -> None:
    """Every field of a valid signed manifest replaced by hostile JSON: 400 (or 413), never a
    5xx, and nothing stored; the valid one is then still accepted."""
    template, valid = fleet_home
    home = tmp_path / "home"
    shutil.copytree(template, home)
    bodies: list[bytes] = []

    @FAST
    @given(_mutations(json.loads(valid)))
    def collect(doc: Any) -> None:
        bodies.append(json.dumps(doc).encode())

    collect()
    bodies += [b"", b"[]", b"{" * 5000, b"\xff" * 10, b"x" * (300 << 10)]
    path = "/api/v1/vehicles/VIN0001/manifest"

    def same(body: bytes) -> bool:  # a "mutation" that put back the value it replaced
        try:
            return bool(json.loads(body) == json.loads(valid))
        except ValueError:
            return False

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        accepted = 0
        for body in bodies:
            response = await client.post(path, data=body)
            text = await response.text()
            _no_5xx(response.status, body[:80].decode(errors="replace"))
            assert "Traceback" not in text
            if same(body) and not accepted:
                assert response.status == 200, text[:200]
                accepted += 1
            else:  # altered, or the valid one again: a replay
                assert response.status in (400, 413), (response.status, text[:200])
        response = await client.post(path, data=valid)
        assert response.status == (400 if accepted else 200), await response.text()

    run_app(home, scenario)
