"""Built read answers stay right without asking the database (issue 14).

The registry keeps GET and list answers in memory (views.ReadCache) and serves them without a
query. A trigger announces every change an answer shows on `registry_reads`
(migrations/versions/0008): `ReadFollower` listens on its own connection and drops what each
notification names, on every replica. While it is not listening (starting, or its connection was
lost) the cache serves nothing and every read asks the database; after a reconnect it starts
empty, so nothing announced while it was away is served.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from services.kit.db import Database
from services.registry.views import ReadCache

log = logging.getLogger(__name__)

CHANNEL = "registry_reads"
RECONNECT_SECONDS = 1.0


class ReadFollower:
    def __init__(self, db: Database, cache: ReadCache) -> None:
        self.db = db
        self.cache = cache
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listener = await self._listen()
        self._task = asyncio.create_task(self._keep(listener))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.cache.stop_serving()

    async def _listen(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(
            self.db.url, server_settings={"search_path": self.db.schema}
        )
        await connection.add_listener(CHANNEL, self._notified)
        # Listening from here on: what changed before is not in the (empty) cache.
        self.cache.start_serving()
        return connection

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self.cache.changed(payload)

    async def _keep(self, listener: asyncpg.Connection) -> None:
        """Watch the listening connection; while it is lost, serve nothing from the cache."""
        while True:
            await asyncio.sleep(RECONNECT_SECONDS)
            if not listener.is_closed():
                continue
            self.cache.stop_serving()
            log.warning("reads: lost the database notifications; reads ask the database until back")
            try:
                listener = await self._listen()
            except Exception as failure:
                log.warning("reads: reconnect failed (%s); retrying", failure)
