"""The fleet database, on SQLite and on PostgreSQL: schema and migrations, the upgrade policy,
reports stored once (also under concurrency), caps, an unavailable database, the JSONL import.

Every test that touches a database takes ``database_url`` or ``empty_database_url``
(tests/conftest.py): it runs once per backend, each time on a database of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, make_url, select, text
from sqlalchemy.exc import IntegrityError

from ota_server.config import Layout, ServerConfig, parse_config
from ota_server.errors import ConfigError, DatabaseError, OtaError
from ota_server.fleet import db as db_module
from ota_server.fleet.db import Database, head, opened, shown, upgrade
from ota_server.fleet.report_policy import ReportLimits, Usage, decide
from ota_server.fleet.schema import Base, Ecu, Event, Vehicle
from ota_server.http.app import create_app
from tests.helpers import ok, one_line_error, ota, use_database

Client = TestClient[web.Request, web.Application]
EVENTS = "/api/v1/vehicles/{}/events"


def report(i: int = 0, vin: str = "VIN0001", **fields: Any) -> dict[str, Any]:
    return {
        "id": f"{i:032x}",
        "vehicle_id": vin,
        "ecu": "bcm-1",
        "event": "commit",
        "time": 1_700_000_000.5,
        "version": "1.1.0",
        **fields,
    }


def run_app(
    home: Path,
    url: str | None,
    scenario: Callable[[Client], Awaitable[Any]],
    limits: ReportLimits | None = None,
) -> Any:
    async def main() -> Any:
        app = create_app(ServerConfig(layout=Layout(home), database_url=url), reports=limits)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(main())


async def query_async(url: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(session)`` on the database at ``url``."""
    async with opened(make_url(url)) as database, database.sessions() as session:
        return await work(session)


def query(url: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
    return asyncio.run(query_async(url, work))


async def _rows(session: Any) -> list[tuple[str, str]]:
    result = await session.execute(select(Event.vin, Event.report_id).order_by(Event.id))
    return [tuple(r) for r in result.all()]


def rows(url: str) -> list[tuple[str, str]]:
    """(vin, report id) of every stored report, oldest first."""
    return query(url, _rows)  # type: ignore[no-any-return]


# -- schema and migrations ------------------------------------------------------------------------


def test_models_and_migrations_agree(empty_database_url: str) -> None:
    url = make_url(empty_database_url)

    async def main() -> list[Any]:
        await upgrade(url)
        async with opened(url) as database, database.engine.connect() as connection:
            return await connection.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )

    assert asyncio.run(main()) == []


def test_upgrade_is_idempotent(empty_home: Path, empty_database_url: str) -> None:
    use_database(empty_home, empty_database_url)
    status = json.loads(ok(ota(empty_home, "db", "status", "--json")).stdout)
    assert (status["revision"], status["current"]) == (None, False)
    assert json.loads(ok(ota(empty_home, "db", "upgrade", "--json")).stdout) == {
        "from": None,
        "to": head(),
    }
    for _ in range(2):
        again = json.loads(ok(ota(empty_home, "db", "upgrade", "--json")).stdout)
        assert again == {"from": head(), "to": head()}
    assert "already at revision" in ok(ota(empty_home, "db", "upgrade")).stdout
    status = json.loads(ok(ota(empty_home, "db", "status", "--json")).stdout)
    assert (status["revision"], status["current"]) == (head(), True)


def test_inventory_round_trip(database_url: str) -> None:
    """Aware UTC timestamps, JSON columns and the ECU's foreign key, the same on both."""
    created = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    key = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "ab" * 32}}

    async def work(session: Any) -> None:
        session.add(Vehicle(vin="VIN0001", created_at=created, tags={"model": "x"}))
        await session.flush()
        session.add(
            Ecu(
                serial="HU-1",
                vin="VIN0001",
                hardware_id="hu-imx8",
                is_primary=True,
                public_key=key,
                keyid="0" * 64,
                installed_length=2**40,
                release_counter=2**63 - 1,
            )
        )
        await session.commit()
        session.expunge_all()  # read back from the database, not from the session
        vehicle = (await session.execute(select(Vehicle))).scalar_one()
        assert vehicle.created_at == created and vehicle.created_at.tzinfo == UTC
        assert vehicle.tags == {"model": "x"} and vehicle.revoked_at is None
        ecu = (await session.execute(select(Ecu))).scalar_one()
        assert ecu.public_key == key and ecu.release_counter == 2**63 - 1
        session.add(
            Ecu(
                serial="TCU-1",
                vin="NOSUCHVIN",
                hardware_id="t",
                is_primary=False,
                public_key=key,
                keyid="1" * 64,
            )
        )
        with pytest.raises(IntegrityError):
            await session.commit()

    query(database_url, work)


def test_default_database_is_sqlite_in_the_home(empty_home: Path) -> None:
    status = json.loads(ok(ota(empty_home, "db", "status", "--json")).stdout)
    assert status["database"] == f"sqlite+aiosqlite:///{empty_home / 'state/fleet.db'}"
    assert status["revision"] is None
    assert not (empty_home / "state/fleet.db").exists()  # status changes nothing

    async def empty(client: Client) -> Any:
        return await (await client.get(EVENTS.format("VIN0001"))).json()

    assert run_app(empty_home, None, empty) == []  # the server creates and upgrades it
    status = json.loads(ok(ota(empty_home, "db", "status", "--json")).stdout)
    assert (status["revision"], status["current"]) == (head(), True)


def test_a_shared_database_behind_head_is_refused(
    empty_home: Path, empty_database_url: str
) -> None:
    """PostgreSQL: the server refuses, one line; SQLite (embedded): upgraded on open."""
    use_database(empty_home, empty_database_url)
    if empty_database_url.startswith("sqlite"):
        run_app(empty_home, empty_database_url, lambda client: client.get("/healthz"))
        assert json.loads(ok(ota(empty_home, "db", "status", "--json")).stdout)["current"]
        return
    line = one_line_error(ota(empty_home, "serve", "--port", "0", "--no-refresh"))
    assert line == (
        f"Error: the fleet database is at revision none (empty), this server needs {head()}: "
        "run 'ota db upgrade'"
    )
    ok(ota(empty_home, "db", "upgrade"))
    # A revision this server does not know (a newer ota migrated the database): refused too.

    async def stamp(session: Any) -> None:
        await session.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        await session.commit()

    query(empty_database_url, stamp)
    line = one_line_error(ota(empty_home, "serve", "--port", "0", "--no-refresh"))
    assert "revision 9999, which this server does not know" in line
    assert "revision 9999" in one_line_error(ota(empty_home, "db", "upgrade"))


# -- reports ---------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    stored=st.integers(0, 40),
    oldest=st.lists(st.integers(1, 5000), min_size=40, max_size=40),
    size=st.integers(1, 20_000),
    usage=st.builds(Usage, st.integers(0, 6), st.integers(0, 120_000)),
    limits=st.builds(
        ReportLimits,
        per_vehicle=st.integers(1, 10),
        vehicles=st.integers(1, 5),
        total_bytes=st.integers(1, 100_000),
    ),
)
def test_the_policy_keeps_every_cap(
    stored: int, oldest: list[int], size: int, usage: Usage, limits: ReportLimits
) -> None:
    """Pure: a stored report never takes a vehicle past its cap, a new vehicle past the
    vehicle cap, or the store past its bytes; a refusal says which cap."""
    decision = decide(size=size, stored=stored, oldest=oldest, usage=usage, limits=limits)
    new_vehicle_refused = stored == 0 and usage.vehicles >= limits.vehicles
    if decision.action == "store":
        assert stored - decision.drop + 1 <= limits.per_vehicle
        assert decision.drop <= stored and decision.freed == sum(oldest[: decision.drop])
        assert usage.total_bytes + size - decision.freed <= limits.total_bytes
        assert not new_vehicle_refused
    else:
        assert decision.reason and decision.drop == 0
        drop = max(0, stored + 1 - limits.per_vehicle)
        over = usage.total_bytes + size - sum(oldest[:drop]) > limits.total_bytes
        assert new_vehicle_refused or over


def test_a_report_is_stored_once_also_when_posted_concurrently(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario(client: Client) -> None:
        url = EVENTS.format("VIN0001")
        responses = await asyncio.gather(*(client.post(url, json=report(1)) for _ in range(20)))
        assert sorted(r.status for r in responses) == [200] * 19 + [202]
        assert (await client.post(url, json=report(1))).status == 200
        assert (await client.post(url, json=report(2))).status == 202
        got = await (await client.get(url)).json()
        assert [r["id"] for r in got] == [report(1)["id"], report(2)["id"]]
        assert {k: v for k, v in got[0].items() if k != "received"} == report(1)
        assert abs(got[0]["received"] - datetime.now(UTC).timestamp()) < 3600
        assert await (await client.get(EVENTS.format("VIN0002"))).json() == []

    run_app(tmp_path, database_url, scenario)
    assert rows(database_url) == [("VIN0001", report(1)["id"]), ("VIN0001", report(2)["id"])]


def test_two_servers_share_one_database(tmp_path: Path, database_url: str) -> None:
    """Two apps (as two ``ota serve`` processes would): a report stored by one is a duplicate
    for the other."""

    async def main() -> list[int]:
        config = ServerConfig(layout=Layout(tmp_path), database_url=database_url)
        async with (
            TestClient(TestServer(create_app(config))) as one,
            TestClient(TestServer(create_app(config))) as two,
        ):
            url = EVENTS.format("VIN0001")
            posts = [c.post(url, json=report(7)) for c in (one, two) for _ in range(5)]
            return sorted(r.status for r in await asyncio.gather(*posts))

    assert asyncio.run(main()) == [200] * 9 + [202]
    assert len(rows(database_url)) == 1


def test_caps_refuse_with_507_and_store_nothing(tmp_path: Path, database_url: str) -> None:
    limits = ReportLimits(per_vehicle=3, vehicles=2, total_bytes=8 << 10)

    async def scenario(client: Client) -> None:
        for i in range(5):  # per vehicle: the newest 3 are kept
            assert (await client.post(EVENTS.format("VIN0001"), json=report(i))).status == 202
        got = await (await client.get(EVENTS.format("VIN0001"))).json()
        assert [r["id"] for r in got] == [report(i)["id"] for i in (2, 3, 4)]
        second = await client.post(EVENTS.format("VIN0002"), json=report(1, "VIN0002"))
        assert second.status == 202
        before = await query_async(database_url, _rows)
        third = await client.post(EVENTS.format("VIN0003"), json=report(1, "VIN0003"))
        assert third.status == 507 and "2 vehicles" in await third.text()
        assert await query_async(database_url, _rows) == before
        # Long reports of one vehicle: it only replaces its own oldest, the bytes stay inside.
        for i in range(10, 30):
            body = report(i, "VIN0002", event="update_failed", error="é" * 300)
            assert (await client.post(EVENTS.format("VIN0002"), json=body)).status == 202

    run_app(tmp_path, database_url, scenario, limits)

    async def total(session: Any) -> int:
        return int((await session.execute(select(func.sum(Event.size)))).scalar_one())

    assert query(database_url, total) <= 8 << 10
    assert len(rows(database_url)) == 6


def test_the_byte_cap_refuses_with_507(tmp_path: Path, database_url: str) -> None:
    limits = ReportLimits(per_vehicle=1000, vehicles=10, total_bytes=4 << 10)
    url = EVENTS.format("VIN0001")

    async def scenario(client: Client) -> list[int]:
        statuses = [
            (await client.post(url, json=report(i, error="e" * 900))).status for i in range(8)
        ]
        # A resent report is answered as a duplicate even when the store is full.
        assert (await client.post(url, json=report(0, error="e" * 900))).status == 200
        return statuses

    statuses = run_app(tmp_path, database_url, scenario, limits)
    assert statuses[0] == 202 and statuses[-1] == 507, statuses
    assert len(rows(database_url)) == statuses.count(202)


# -- an unavailable database ---------------------------------------------------------------------


class Proxy:
    """A TCP forwarder to PostgreSQL that can be cut (the database "goes away")."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


def test_an_unavailable_database_is_503_then_recovers(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL goes away (its connections cut, the port closed); SQLite is locked by
    another writer for longer than the busy timeout. Posts get 503, then work again."""
    url = EVENTS.format("VIN0001")
    sqlite = database_url.startswith("sqlite")
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 50)

    async def main() -> None:
        app_url = database_url
        proxy = None
        if not sqlite:
            parsed = make_url(database_url)
            proxy = Proxy(parsed.port or 5432)
            await proxy.start()
            app_url = parsed.set(port=proxy.port).render_as_string(hide_password=False)
        config = ServerConfig(layout=Layout(tmp_path), database_url=app_url)
        async with TestClient(TestServer(create_app(config))) as client:
            assert (await client.post(url, json=report(1))).status == 202
            locker = None
            if proxy is not None:
                await proxy.cut()
            else:
                locker = sqlite3.connect(make_url(database_url).database or "", timeout=0)
                locker.execute("BEGIN EXCLUSIVE")
                locker.execute("DELETE FROM events WHERE 0")
            for i in (2, 3):
                response = await client.post(url, json=report(i))
                assert response.status == 503, await response.text()
                assert await response.text() == "the fleet database is unavailable; retry later"
            if proxy is not None:
                await proxy.start()  # the same port again
                got = await client.get(url)
            else:
                assert locker is not None
                got = await client.get(url)  # WAL: readers are not blocked by the writer
                locker.rollback()
                locker.close()
            assert got.status == 200 and len(await got.json()) == 1
            assert (await client.post(url, json=report(2))).status == 202
        if proxy is not None:
            await proxy.cut()

    asyncio.run(main())
    assert [r for _, r in rows(database_url)] == [report(1)["id"], report(2)["id"]]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_unreachable_database_is_one_line(empty_home: Path, backend: str) -> None:
    """A PostgreSQL URL to a closed port, an SQLite file under a regular file: one line from
    every command and from ``ota serve``, no traceback, no password."""
    if backend == "postgresql":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again when the block ends
        url = f"postgresql+asyncpg://ota:hunter2@127.0.0.1:{port}/fleet"
        commands = [("db", "status"), ("db", "upgrade"), ("db", "upgrade", "--json")]
    else:
        (empty_home / "blocker").write_text("a file, not a folder")
        url = f"sqlite+aiosqlite:///{empty_home / 'blocker/fleet.db'}"
        commands = [("db", "upgrade")]
    use_database(empty_home, url)
    for args in [*commands, ("serve", "--port", "0", "--no-refresh")]:
        line = one_line_error(ota(empty_home, *args))
        assert "fleet database" in line and "hunter2" not in line, (args, line)
        if backend == "postgresql":
            assert "ota:***@127.0.0.1" in line, line


def test_database_url_in_config_toml(tmp_path: Path) -> None:
    good = "postgresql+asyncpg://ota:s3cret@db.example:5432/fleet?ssl=require"
    assert parse_config(tmp_path, f'database_url = "{good}"\n').database_url == good
    assert parse_config(tmp_path, "").database_url is None
    bad = [
        "mysql://ota@db/fleet",
        "postgresql://ota:s3cret@db/fleet",  # psycopg2: not a driver this server ships with
        "sqlite+aiosqlite:///relative.db",
        "sqlite+aiosqlite://",
        "postgresql+asyncpg://ota:s3cret@db:70000/fleet",
        "postgresql+asyncpg://ota:s3cret@db:port/fleet",
        "postgresql+asyncpg://ota:s3cret@db/",
        "postgresql+asyncpg://ota:s3cret@db/fleet extra",
        "postgresql+asyncpg://ota:s3cret@db/\\u0007",
        "postgresql+asyncpg://ota:s3cret@db/" + "x" * 1100,
    ]
    for value in bad:
        with pytest.raises(ConfigError) as e:
            parse_config(tmp_path, f'database_url = "{value}"\n')
        assert "database_url" in str(e.value) and "s3cret" not in str(e.value), str(e.value)
    for toml in ("database_url = 5\n", "database_url = []\n", "[database_url]\nx = 1\n"):
        with pytest.raises(ConfigError, match="database_url"):
            parse_config(tmp_path, toml)
    assert "s3cret" not in shown(make_url(good))


# -- the old JSON-lines store --------------------------------------------------------------------


def _old_line(i: int, vin: str = "VIN0001", received: float = 1_600_000_000.25) -> str:
    return json.dumps({**report(i, vin), "received": received}) + "\n"


def test_the_old_jsonl_store_is_imported_once(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = tmp_path / "state/events"
    events.mkdir(parents=True)
    lines = [_old_line(i, received=1_600_000_000.25 + i) for i in range(5)]
    (events / "VIN0001.jsonl").write_text(
        lines[0]
        + "garbage\n"
        + lines[1]
        + lines[1]
        + '{"event": []}\n'
        + "".join(lines[2:])
        + lines[4][:30]  # torn: a kill mid-append
    )
    (events / "VIN0002.jsonl").write_text(_old_line(1, "VIN0003") + _old_line(2, "VIN0002"))
    os.mkfifo(events / "VIN0004.jsonl")  # never opened for a blocking read
    (events / "VIN0005.jsonl").symlink_to("/dev/zero")
    (events / "bad name!.jsonl").write_text(_old_line(1, "VIN0009"))
    limits = ReportLimits(per_vehicle=4)

    async def scenario(client: Client) -> dict[str, list[dict[str, Any]]]:
        return {
            vin: await (await client.get(EVENTS.format(vin))).json()
            for vin in ("VIN0001", "VIN0002", "VIN0003")
        }

    with caplog.at_level(logging.INFO, logger="ota.serve"):
        got = run_app(tmp_path, database_url, scenario, limits)
    assert [r["id"] for r in got["VIN0001"]] == [report(i)["id"] for i in (1, 2, 3, 4)]
    assert [r["received"] for r in got["VIN0001"]] == [1_600_000_000.25 + i for i in (1, 2, 3, 4)]
    assert [r["id"] for r in got["VIN0002"]] == [report(2)["id"]] and got["VIN0003"] == []
    imported = [r.getMessage() for r in caplog.records if "imported" in r.getMessage()]
    assert len(imported) == 1 and "imported 5 reports of 2 vehicles" in imported[0], imported
    assert not events.exists()
    moved = sorted(p.name for p in (tmp_path / "state/events.imported").iterdir())
    assert moved == sorted(
        ["VIN0001.jsonl", "VIN0002.jsonl", "VIN0004.jsonl", "VIN0005.jsonl", "bad name!.jsonl"]
    )
    before = rows(database_url)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ota.serve"):
        run_app(tmp_path, database_url, scenario, limits)
    assert rows(database_url) == before
    assert not [r for r in caplog.records if "imported" in r.getMessage()]


def test_an_interrupted_import_runs_again_without_duplicates(
    tmp_path: Path, database_url: str
) -> None:
    events = tmp_path / "state/events"
    events.mkdir(parents=True)
    (events / "VIN0001.jsonl").write_text("".join(_old_line(i) for i in range(3)))
    run_app(tmp_path, database_url, lambda client: client.get("/healthz"))
    # As if the server had died before moving the files: the same store once more.
    os.rename(tmp_path / "state/events.imported", events)
    run_app(tmp_path, database_url, lambda client: client.get("/healthz"))
    assert len(rows(database_url)) == 3
    assert sorted(p.name for p in (tmp_path / "state/events.imported").iterdir()) == [
        "VIN0001.jsonl"
    ]


def test_the_password_is_never_shown() -> None:
    url = make_url("postgresql+asyncpg://ota:pw-123@db.example/fleet")
    assert "pw-123" not in shown(url) and "pw-123" not in repr(Database(url))
    assert issubclass(DatabaseError, OtaError)
