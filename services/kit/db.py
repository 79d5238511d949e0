"""Async database access: one PostgreSQL schema per service, SQLAlchemy on asyncpg.

Hot paths use raw asyncpg connections (`Database.raw()`, a pool of their own) and the rest
SQLAlchemy Core on the tables of the service's models (`Database.engine`). Each service sets its
own schema as the connection's `search_path`, so it only ever sees its own tables.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
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
#: A statement cut short on the client's side: the connection's protocol state is not to be trusted.
_INTERRUPTIONS = (asyncio.CancelledError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)


def asyncpg_url(url: str) -> str:
    """`postgresql://...` (as users write it) in the form SQLAlchemy's asyncpg dialect wants."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


class Database:
    """The connection pool of one service, bound to that service's schema."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10, raw_pool_size: int = 20) -> None:
        self.schema = schema
        #: The server's URL as asyncpg takes it (for connections outside the pool, e.g. LISTEN).
        self.url = "postgresql://" + asyncpg_url(url).removeprefix("postgresql+asyncpg://")
        self._server_settings = {
            "search_path": schema,
            "application_name": f"chutes-{schema}",
            # Our statements are short lookups by key: a generic plan is as good as a custom one,
            # and re-planning every execution cost ~0.2 ms per lookup.
            "plan_cache_mode": "force_generic_plan",
        }
        self.engine: AsyncEngine = create_async_engine(
            asyncpg_url(url),
            pool_size=pool_size,
            # No pre-ping: it costs three round trips per checkout on every request. A connection
            # the server dropped fails its statement once and is replaced by the pool.
            pool_recycle=3600,
            connect_args={"server_settings": self._server_settings},
        )
        self._raw_pool_size = raw_pool_size
        self._raw_pool: asyncio.Future[asyncpg.Pool] | None = None
        self._before_close: list[Callable[[], Awaitable[None]]] = []

    def before_close(self, finish: Callable[[], Awaitable[None]]) -> None:
        """Await `finish` when the pool is about to close: the service has stopped taking calls
        (the kit closes the pool after its server stopped), so what it accepted but holds in
        memory (invocation records waiting for their batch) can still be written."""
        self._before_close.append(finish)

    @asynccontextmanager
    async def raw(self) -> AsyncIterator[Any]:
        """A pooled asyncpg connection, for hot paths: no ORM, no SQL compilation, and asyncpg
        caches each statement's prepared form per connection. asyncpg's own pool: a checkout
        through SQLAlchemy's (engine.connect, get_raw_connection: greenlet switches) cost ~180 µs
        of CPU, this one ~70 (bench/README.md, issue 14)."""
        pool = await self._raw()
        connection = await pool.acquire()
        try:
            yield connection
        except BaseException as error:
            # Closed instead of pooled (the pool opens a new one when next asked): one the server
            # dropped (PostgreSQL restarted) would fail every checkout after it, and one whose
            # statement was interrupted may still be mid-protocol: a cancelled call whose cancel
            # request could not reach the server left the next request "another operation is in
            # progress", a 500.
            if database_unreachable(error) or isinstance(error, _INTERRUPTIONS):
                connection.terminate()
            raise
        finally:
            await pool.release(connection)

    async def _raw(self) -> asyncpg.Pool:
        if self._raw_pool is None:
            self._raw_pool = asyncio.ensure_future(
                asyncpg.create_pool(
                    self.url,
                    # Opened as needed and kept: a connection per concurrent request at most. Every
                    # request beyond `max_size` waits for one; SQLAlchemy's overflow instead opened
                    # and closed one per request (a new PostgreSQL backend each: ~1 ms of CPU on
                    # both sides, issue 14).
                    min_size=0,
                    max_size=self._raw_pool_size,
                    max_inactive_connection_lifetime=3600,
                    server_settings=self._server_settings,
                    init=_json_codecs,
                    reset=_keep_session,
                )
            )
        return await asyncio.shield(self._raw_pool)

    async def close(self) -> None:
        for finish in self._before_close:
            await finish()
        if self._raw_pool is not None:
            await (await self._raw_pool).close()
        await self.engine.dispose()


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """json and jsonb as SQLAlchemy's asyncpg dialect has them, so a query reads the same values
    on either pool: decoded to Python on the way out, JSON text on the way in."""
    await connection.set_type_codec(
        "json",
        encoder=str.encode,
        decoder=lambda data: json.loads(data.decode()),
        schema="pg_catalog",
        format="binary",
    )
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda text: b"\x01" + text.encode(),  # jsonb's binary format: version 1, text
        decoder=lambda data: json.loads(data[1:].decode()),
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing more than asyncpg's own release does (it rolls back a transaction left open).
    Its default reset would also send RESET ALL, UNLISTEN and advisory unlocks: a round trip per
    request for state raw() users never leave (LISTEN runs on its own connections)."""


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


def log_failure(log: logging.Logger, message: str, *args: object) -> None:
    """Log the exception being handled by a background loop: one warning line while the
    database cannot be reached (an outage the loop waits out), else the traceback (a bug)."""
    error = sys.exc_info()[1]
    if error is not None and database_unreachable(error):
        log.warning(message + " (database unreachable: %s)", *args, type(error).__name__)
    else:
        log.exception(message, *args)
