"""``ota serve``: run the HTTP(S) server in the foreground."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import click
from aiohttp import web

from ota_client.strict import FormatError, printable, read_bounded, show
from ota_server.cli.context import CliContext, pass_cli
from ota_server.cli.params import FiniteFloatRange, Text, file_path
from ota_server.cli.render import warn
from ota_server.config import MAX_HOST, REFRESH_INTERVAL, ServeConfig, ServerConfig, check_host
from ota_server.director.service import DirectorKeys
from ota_server.errors import ConfigError, OtaError
from ota_server.fleet.ca import server_files
from ota_server.http.app import create_app
from ota_server.repository.home import RepositoryHome
from ota_server.repository.store import root_versions

MAX_TLS_FILE = 1 << 20
WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - names to leave out of the certificate


def _no_password() -> bytes:
    raise ConfigError("the TLS key is encrypted: give ota serve an unencrypted key")


def _check_tls_file(path: Path, what: str) -> None:
    """A regular file of bounded size: OpenSSL would block on a FIFO or read /dev/zero forever."""
    try:
        read_bounded(path, MAX_TLS_FILE, f"TLS {what} {printable(str(path))}")
    except FileNotFoundError:
        raise ConfigError(f"TLS {what} {printable(str(path))} does not exist") from None
    except FormatError as e:
        raise ConfigError(str(e)) from None


def _tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """Serve ``cert``; ask every client for a certificate and verify it against
    ``client_ca`` (vehicles; operators come without one and use tokens)."""
    _check_tls_file(cert, "certificate")
    _check_tls_file(key, "key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"cannot load TLS certificate {printable(str(cert))} / key {printable(str(key))}: "
            f"{printable(str(e), 200)}"
        ) from None
    if client_ca is not None:
        _check_tls_file(client_ca, "client CA")
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"cannot load the client CA {printable(str(client_ca))}: {printable(str(e), 200)}"
            ) from None
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def _serve(
    config: ServerConfig,
    tls: ssl.SSLContext | None,
    image: RepositoryHome | None,
    director: RepositoryHome | None,
) -> None:
    app = create_app(config, image, director=director, tls=tls is not None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.serve.host, config.serve.port, ssl_context=tls)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {config.serve.host}:{config.serve.port}: {e.strerror}"
        ) from e
    host, port = runner.addresses[0][:2]
    scheme = "https" if tls else "http"
    click.echo(f"serving {config.layout.image.served} at {scheme}://{host}:{port}/repo/", err=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


@click.command()
@click.option("--host", type=Text(MAX_HOST), help="Address to listen on (default 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port (default 8443; 0 picks a free one)."
)
@click.option("--tls-cert", type=file_path(), help="PEM certificate chain.")
@click.option("--tls-key", type=file_path(), help="PEM private key.")
@click.option(
    "--refresh-interval",
    type=FiniteFloatRange(*REFRESH_INTERVAL),
    help="Seconds between re-signing checks (1-86400).",
)
@click.option("--no-refresh", is_flag=True, help="Never re-sign (serve a read-only copy).")
@click.option(
    "--insecure-http",
    is_flag=True,
    help="Plain HTTP, vehicles not authenticated: tests and demos on 127.0.0.1 only.",
)
@pass_cli
def serve(
    cli: CliContext,
    host: str | None,
    port: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    refresh_interval: float | None,
    no_refresh: bool,
    insecure_http: bool,
) -> None:
    """Serve the repositories to vehicles over TLS: /repo/* and /director/<VIN>/*.

    Without --tls-cert/--tls-key the home's CA (state/ca, made on first use) issues the
    server's certificate; the same CA issued the vehicles' client certificates, and a vehicle
    reads only its own Director metadata. Supports Range, If-Range, ETag and If-None-Match.
    Image snapshot and timestamp are re-signed before they expire, and the Director signs
    per vehicle, when their keys load without a prompt (OTA_KEY_PASSPHRASE or --dev).
    Options override [serve] in $OTA_HOME/config.toml.

    \b
    Examples:
      ota serve --port 8443
      ota serve --host 0.0.0.0 --tls-cert server.pem --tls-key server.key
      ota serve --insecure-http --port 8080     # a demo on this machine
    """
    config = cli.config
    base = config.serve
    if host is not None:
        try:
            check_host(host)
        except FormatError as e:
            raise click.BadParameter(f"{show(host)} {e}", param_hint="'--host'") from None
    serve_config = replace(
        base,
        host=host or base.host,
        port=base.port if port is None else port,
        tls_cert=tls_cert or base.tls_cert,
        tls_key=tls_key or base.tls_key,
        refresh_interval=refresh_interval or base.refresh_interval,
    )
    config = replace(config, serve=serve_config)
    if not root_versions(config.layout.image.metadata):
        raise click.ClickException(
            f"no repository in {config.layout.image.served}: run 'ota repo init' first"
        )
    cli.interactive = False
    tls = None if insecure_http else _tls(cli, serve_config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    image = director = None
    if not no_refresh:
        image, director = cli.image, cli.director
        if not image.keys.exists():
            warn("no keys here: snapshot and timestamp will not be re-signed")
            image = None
        if not director.keys.exists() or not root_versions(director.files.metadata):
            warn("no Director here ('ota keys init', 'ota repo init'): vehicles get no assignments")
            director = None
        else:
            try:
                DirectorKeys(director).check_online_keys()
            except (OtaError, OSError) as e:
                warn(
                    f"the Director's online keys cannot be used ({e}): vehicles get no assignments"
                )
                director = None
    asyncio.run(_serve(config, tls, image, director))


def _tls(cli: CliContext, serve: ServeConfig) -> ssl.SSLContext:
    cert, key = serve.tls_cert, serve.tls_key
    if (cert is None) != (key is None):
        raise ConfigError("TLS needs both a certificate and a key")
    ca = cli.ca
    if cert is None or key is None:
        names = [n for n in (serve.host, "localhost", "127.0.0.1") if n not in WILDCARDS]
        if serve.host in WILDCARDS:
            names.append(socket.gethostname())
        cert, key = server_files(ca, tuple(dict.fromkeys(names)), datetime.now(UTC))
    return _tls_context(cert, key, ca.cert_path if ca.exists() else None)
