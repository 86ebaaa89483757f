"""Shared test helpers: run the CLI, snapshot a directory tree, run the real server."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ota_server.cli.main import main as ota_main
from ota_server.config import load_config
from ota_server.repository.home import RepositoryHome, open_home

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "manifests" / "examples"
EXAMPLE_MANIFESTS = [
    EXAMPLES / "body-control-1.0.0.toml",
    EXAMPLES / "infotainment-2.0.0.toml",
    EXAMPLES / "body-control-1.1.0.toml",
    EXAMPLES / "infotainment-2.1.0.toml",
]


def ota(
    home: Path,
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> Result:
    """Run ``ota --home HOME ARGS`` in-process; never raises."""
    runner = CliRunner(env={"OTA_KEY_PASSPHRASE": None, **(env or {})})
    return runner.invoke(ota_main, ["--home", str(home), *map(str, args)], input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result


def one_line_error(result: Result) -> str:
    """Assert a clean failure: non-zero exit, no traceback, exactly one 'Error:' line."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output, result.output  # a bug, not a refusal
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` (relative name → sha256 and mode), to compare before/after."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (
                f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mode:o}"
            )
    return out


def image_home(home: Path) -> RepositoryHome:
    """The Image repository of a server home with --dev keys (no passphrase)."""
    return open_home(load_config(home), "image", lambda _new: b"")


def make_home(tmp_path: Path, *manifests: Path) -> Path:
    home = tmp_path / "home"
    ok(ota(home, "keys", "init", "--dev"))
    ok(ota(home, "repo", "init"))
    for manifest in manifests:
        ok(ota(home, "release", "publish", "-q", manifest))
    return home


def write_manifest(directory: Path, text: str, images: dict[str, bytes] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (images or {}).items():
        (directory / name).write_bytes(data)
    path = directory / "release.toml"
    path.write_text(text)
    return path


# -- TLS ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


def make_tls(directory: Path) -> Tls:
    """A self-signed certificate for 127.0.0.1 (also its own CA bundle)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ota test server")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    tls = Tls(directory / "server.pem", directory / "server.key")
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


# -- the real server ----------------------------------------------------------------------------


@contextmanager
def serve(home: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``ota serve --port 0`` as a real process; yield its repository base URL.

    Plain HTTP (``--insecure-http``) unless ``args`` ask for TLS (``--tls``: the home's own
    CA and server certificate, or ``--tls-cert``)."""
    if "--tls" in args:
        args = tuple(a for a in args if a != "--tls")
    elif "--tls-cert" not in args:
        args = ("--insecure-http", *args)
    log = home / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ota_server",
                "--home",
                str(home),
                "serve",
                "--port",
                "0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=out,
            env={**os.environ, **(env or {})},
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"at (https?://\S+)/repo/", line)
        if match is None:
            proc.kill()
            raise AssertionError(f"server did not start: {line!r} {log.read_text()}")
        yield match.group(1) + "/repo"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def use_database(home: Path, url: str) -> None:
    """Point the home's config.toml at the fleet database ``url`` (a top-level key: first)."""
    config = home / "config.toml"
    rest = config.read_text() if config.exists() else ""
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'database_url = "{url}"\n{rest}')
