"""Async database access: one PostgreSQL schema per service, SQLAlchemy on asyncpg.

Hot paths use the raw asyncpg connection (`Database.raw()`) or SQLAlchemy Core on the tables of
the service's models (`Database.engine`). Each service sets its own schema as the connection's
`search_path`, so it only ever sees its own tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def asyncpg_url(url: str) -> str:
    """`postgresql://...` (as users write it) in the form SQLAlchemy's asyncpg dialect wants."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


class Database:
    """The connection pool of one service, bound to that service's schema."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10) -> None:
        self.schema = schema
        #: The server's URL as asyncpg takes it (for connections outside the pool, e.g. LISTEN).
        self.url = "postgresql://" + asyncpg_url(url).removeprefix("postgresql+asyncpg://")
        self.engine: AsyncEngine = create_async_engine(
            asyncpg_url(url),
            pool_size=pool_size,
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
            yield raw.driver_connection

    async def close(self) -> None:
        for finish in self._before_close:
            await finish()
        await self.engine.dispose()
