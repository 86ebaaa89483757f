"""A throwaway PostgreSQL 15 for the tests: started once per session, one database per test.

DESIGN §6: the fleet database runs on SQLite and PostgreSQL with the same code, so every test
that touches it runs on both. PostgreSQL refuses to run as root; as root the cluster belongs to
the ``postgres`` user and each tool runs through ``runuser``. The cluster lives in a folder under
the system temp folder (the pytest folders are private to root) and trades durability for speed
(no fsync): it is deleted at the end of the session.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "ota"
REQUIRE_ENV = "OTA_REQUIRE_POSTGRES"


def missing() -> str | None:
    """Why the throwaway server cannot run here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (BIN / tool).exists():
            return f"PostgreSQL 15 is not installed ({BIN / tool} is missing)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    root: Path  # owned by the server's user: data/, the socket and the log
    port: int = 0
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        proc = subprocess.run(
            [*as_postgres, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stdout}{proc.stderr}")

    def start(self) -> None:
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync")
        for attempt in range(3):  # a free port may be taken between the probe and the start
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    str(BIN / "pg_ctl"),
                    *("-D", str(self.data), "-l", str(self.root / "log"), "-o", options),
                    *("-w", "-t", "60", "start"),
                )
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        try:
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"test_{next(self._names)}"

        async def create() -> None:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user=USER, database="postgres"
            )
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.url(name)


def start_postgres() -> Postgres:
    """Start a throwaway cluster (the caller stops it)."""
    root = Path(tempfile.mkdtemp(prefix="ota-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = Postgres(root)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server
