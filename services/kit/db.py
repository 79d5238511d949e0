"""Async database access: one PostgreSQL schema per service, SQLAlchemy on asyncpg.

Hot paths use the raw asyncpg connection (`Database.raw()`) or SQLAlchemy Core on the tables of
the service's models (`Database.engine`). Each service sets its own schema as the connection's
`search_path`, so it only ever sees its own tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: What a caller is told while the database cannot be reached (a 503: try again).
DATABASE_UNAVAILABLE = "Service temporarily unavailable, try again shortly"
#: PostgreSQL refusing or dropping connections: shutting down, starting up, crashed, full.
_OUTAGES = (
    OSError,  # refused, reset: the server is gone (ConnectionError, socket timeouts)
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,  # "the database system is starting up"
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    sa_exc.TimeoutError,  # no pooled connection came back in time
)


def asyncpg_url(url: str) -> str:
    """`postgresql://...` (as users write it) in the form SQLAlchemy's asyncpg dialect wants."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


class Database:
    """The connection pool of one service, bound to that service's schema."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 20) -> None:
        self.schema = schema
        #: The server's URL as asyncpg takes it (for connections outside the pool, e.g. LISTEN).
        self.url = "postgresql://" + asyncpg_url(url).removeprefix("postgresql+asyncpg://")
        self.engine: AsyncEngine = create_async_engine(
            asyncpg_url(url),
            # Connections kept open. Every request beyond them opens a connection of its own and
            # closes it when done (SQLAlchemy's overflow): a new PostgreSQL backend per request,
            # ~1 ms of CPU on both sides. With 10 kept, 16 concurrent reads that missed the
            # registry's cache churned a connection per request (bench/README.md, issue 14).
            pool_size=pool_size,
            max_overflow=10,
            # No pre-ping: it costs three round trips per checkout on every request. A connection
            # the server dropped fails its statement once and is replaced by the pool.
            pool_recycle=3600,
            connect_args={
                "server_settings": {
                    "search_path": schema,
                    "application_name": f"chutes-{schema}",
                    # Our statements are short lookups by key: a generic plan is as good as a
                    # custom one, and re-planning every execution cost ~0.2 ms per lookup.
                    "plan_cache_mode": "force_generic_plan",
                }
            },
        )
        self._before_close: list[Callable[[], Awaitable[None]]] = []

    def before_close(self, finish: Callable[[], Awaitable[None]]) -> None:
        """Await `finish` when the pool is about to close: the service has stopped taking calls
        (the kit closes the pool after its server stopped), so what it accepted but holds in
        memory (invocation records waiting for their batch) can still be written."""
        self._before_close.append(finish)

    @asynccontextmanager
    async def raw(self) -> AsyncIterator[Any]:
        """A pooled asyncpg connection, for hot paths: no ORM, no SQL compilation, and asyncpg
        caches each statement's prepared form per connection."""
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            try:
                yield raw.driver_connection
            except BaseException as error:
                # SQLAlchemy never sees what fails on the driver's connection: one the server
                # dropped (PostgreSQL restarted) would go back to the pool and fail every
                # checkout after it. It is discarded instead, and the pool makes a new one.
                if database_unreachable(error):
                    await connection.invalidate()
                raise

    async def close(self) -> None:
        for finish in self._before_close:
            await finish()
        await self.engine.dispose()


def database_unreachable(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) says the database cannot be reached right now, as while
    PostgreSQL restarts: the call deserves a 503 and a retry, not a 500 and a traceback."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, asyncpg.InterfaceError) and "connection" in str(current):
            return True  # "connection is closed", "connection was closed in the middle of operation"
        wrapped = getattr(current, "orig", None)
        current = (
            wrapped if isinstance(wrapped, BaseException) else (current.__cause__ or current.__context__)
        )
    return False
