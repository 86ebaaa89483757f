"""The fleet database: where it is, its engine and sessions, and its schema revision.

SQLite under the server home by default (embedded, nothing to set up); ``database_url`` in
config.toml names a PostgreSQL server instead, which several ``ota serve`` processes may share
(DESIGN §6). One code path for both: SQLAlchemy 2 (async) and Alembic migrations shipped in
the package (``migrations/``, run on the server's own connection, no ``alembic.ini``).

Schema policy: the embedded SQLite database is upgraded to this server's revision whenever the
server or a command opens it (only this host uses it). Any other database is upgraded only by
an operator (``ota db upgrade``): a server that finds it at another revision refuses to start
with one line saying so, since other servers of another version may share it. Any failure to
reach or use the database is one ``DatabaseError`` with what to do; a password in the URL is
never shown (``shown``).

This module knows nothing of the tables' meaning: queries live with their users
(``fleet.events``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, event, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from ota_client.strict import printable
from ota_server.config import ServerConfig
from ota_server.errors import DatabaseError

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
DEFAULT_FILE = "fleet.db"  # in the home's state/ folder
BUSY_TIMEOUT_MS = 5000  # SQLite: how long a writer waits for another one
CONNECT_TIMEOUT = 10.0  # seconds: PostgreSQL
# What reaching or using the database can raise, apart from bugs.
UNAVAILABLE = (DBAPIError, DisconnectionError, PoolTimeoutError, OSError, TimeoutError)


def url_for(config: ServerConfig) -> URL:
    """The database of this config: ``database_url``, else SQLite in the home's state/."""
    if config.database_url is not None:
        return make_url(config.database_url)  # checked when config.toml was read
    return URL.create("sqlite+aiosqlite", database=str(config.layout.state / DEFAULT_FILE))


def shown(url: URL) -> str:
    """The URL as it may be logged or printed: the password masked."""
    return url.render_as_string(hide_password=True)


def is_embedded(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    return Path(database) if is_embedded(url) and database and database != ":memory:" else None


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())  # the package's: fixed at run time


def head() -> str:
    """The schema revision this server needs."""
    revision = _scripts().get_current_head()
    assert revision is not None  # the package ships at least one migration
    return revision


def _known() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # Every connection: readers never block the writer (WAL), foreign keys are enforced, and
    # a writer waits for another instead of failing at once.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_MS)}")
    finally:
        cursor.close()


def _engine(url: URL) -> AsyncEngine:
    if is_embedded(url):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, connect_args={"timeout": CONNECT_TIMEOUT})


def _cause(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e) or type(e).__name__
    return printable(" ".join(text.split()), 200)


@dataclass(frozen=True)
class Revision:
    current: str | None  # None: an empty database
    head: str

    @property
    def is_current(self) -> bool:
        return self.current == self.head


class Database:
    """An engine and its session factory for one database URL. Creating one does no I/O."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine = _engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({shown(self.url)})"

    @property
    def embedded(self) -> bool:
        return is_embedded(self.url)

    @contextlib.asynccontextmanager
    async def reaching(self) -> AsyncIterator[None]:
        """Turn a failure to reach or use the database into one DatabaseError."""
        try:
            yield
        except UNAVAILABLE as e:
            raise DatabaseError(
                f"cannot use the fleet database {shown(self.url)}: {_cause(e)} "
                "(check that it is running and that database_url in config.toml is right)"
            ) from e

    async def revision(self) -> Revision:
        """The schema revision of the database; an SQLite file that does not exist yet is
        reported as empty, and not created."""
        path = _sqlite_file(self.url)
        if path is not None and not path.exists():
            return Revision(None, head())
        async with self.reaching(), self.engine.connect() as connection:
            current = await connection.run_sync(_current_revision)
        return Revision(current, head())

    async def upgrade(self) -> Revision:
        """Migrate to this server's revision; returns the revision it started from."""
        before = await self.revision()
        if before.current is not None and before.current not in _known():
            raise DatabaseError(self._unknown(before))
        if before.is_current:
            return before
        path = _sqlite_file(self.url)
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatabaseError(
                f"cannot create the fleet database {shown(self.url)}: {e.strerror or e}"
            ) from e
        async with self.reaching(), self.engine.begin() as connection:
            await connection.run_sync(_upgrade_to_head)
        return before

    async def check_current(self) -> None:
        """DatabaseError unless the schema is at this server's revision."""
        revision = await self.revision()
        if revision.current is not None and revision.current not in _known():
            raise DatabaseError(self._unknown(revision))
        if not revision.is_current:
            raise DatabaseError(
                f"the fleet database is at revision {revision.current or 'none (empty)'}, "
                f"this server needs {revision.head}: run 'ota db upgrade'"
            )

    async def prepare(self) -> None:
        """Make the database ready to serve: upgrade an embedded one, check any other."""
        if not self.embedded:
            await self.check_current()
            return
        try:
            await self.upgrade()
        except DatabaseError:
            # Another process on this host may have upgraded it at the same moment.
            if not (await self.revision()).is_current:
                raise

    async def dispose(self) -> None:
        await self.engine.dispose()

    def _unknown(self, revision: Revision) -> str:
        return (
            f"the fleet database {shown(self.url)} is at revision {revision.current}, which "
            f"this server does not know (it needs {revision.head}): a newer ota upgraded it"
        )


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade_to_head(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@contextlib.asynccontextmanager
async def opened(url: URL) -> AsyncIterator[Database]:
    """A Database, disposed of on exit."""
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()


async def open_database(url: URL) -> Database:
    """A Database ready to serve (``Database.prepare``); the caller disposes of it."""
    database = Database(url)
    try:
        await database.prepare()
    except BaseException:
        await database.dispose()
        raise
    return database


async def upgrade(url: URL) -> Revision:
    """Migrate the database at ``url`` to this server's revision (``ota db upgrade``)."""
    async with opened(url) as database:
        return await database.upgrade()
