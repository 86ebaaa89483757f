"""Alembic's entry point for the fleet database (run by ``ota_server.fleet.db``, not by hand).

``fleet.db`` hands over an open connection (``config.attributes["connection"]``) from inside
``AsyncConnection.run_sync``, so migrations run on the server's own engine with its connection
settings (SQLite pragmas, timeouts). Run on its own (``alembic -c some.ini upgrade head`` with
``sqlalchemy.url`` set), it makes an async engine for that URL instead. Online only: there is
no offline (SQL script) mode.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from ota_server.fleet.schema import Base


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying
    )
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_url(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("the fleet database has no offline migrations: run 'ota db upgrade'")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no sqlalchemy.url: run 'ota db upgrade' instead")
    asyncio.run(_migrate_url(url))


main()
