"""The gateway's routes follow the database.

The registry is Envoy's control plane (xds.py serves the RoutingTable). `RouteFollower` loads
every chute's route from the database before the table answers any Envoy (an empty answer would
make Envoy drop every chute), then keeps it equal to the tables: a trigger announces each change
of an instance or of a chute's route on `registry_routing` (migrations/versions/0003), and the
follower reloads just those chutes. If the listening connection is lost, it reconnects and
reloads everything, so no change is missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import asyncpg

from services.kit.db import Database, log_failure
from services.registry import fleet_store
from services.registry.xds import ChuteRoute, Endpoint, RoutingTable

log = logging.getLogger(__name__)

CHANNEL = "registry_routing"
#: Changes arriving within this window are applied together (a chute's deletion notifies once per
#: instance).
BATCH_SECONDS = 0.005
RECONNECT_SECONDS = 1.0


def route_of(row: Any) -> ChuteRoute | None:
    """A chute's route from its row; None (and a warning) when it cannot be routed."""
    try:
        instances = json.loads(row["instances"])
        endpoints = tuple(Endpoint(i["instance_id"], i["host"], i["port"]) for i in instances)
        return ChuteRoute(row["chute_id"], row["slug"], row["concurrency"], endpoints)
    except ValueError as invalid:
        log.warning("routing: chute %s is not routable: %s", row["chute_id"], invalid)
        return None


class RouteFollower:
    def __init__(self, db: Database, table: RoutingTable) -> None:
        self.db = db
        self.table = table
        self._changed: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Load every route, let Envoy be answered, then follow changes in the background."""
        listener = await self._listen()
        await self.reload()
        self.table.mark_ready()
        self._tasks = [asyncio.create_task(self._apply_changes()), asyncio.create_task(self._keep(listener))]

    def close(self) -> None:
        """Stop following (the registry is stopping)."""
        for task in self._tasks:
            task.cancel()

    async def reload(self, chute_ids: Iterable[str] | None = None) -> None:
        """Make the table match the database: for the given chutes, or for all of them."""
        wanted = None if chute_ids is None else sorted(set(chute_ids))
        async with self.db.raw() as connection:
            rows = await fleet_store.routes(connection, wanted)
        routes = [route for route in map(route_of, rows) if route is not None]
        if wanted is None:
            self.table.load(routes)
            return
        gone = sorted(set(wanted) - {route.chute_id for route in routes})
        self.table.update(routes, gone)

    async def _listen(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(
            self.db.url, server_settings={"search_path": self.db.schema}
        )
        await connection.add_listener(CHANNEL, self._notified)
        return connection

    def _notified(self, connection: Any, pid: int, channel: str, chute_id: str) -> None:
        self._changed.add(chute_id)
        self._wake.set()

    async def _apply_changes(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_SECONDS)
            self._wake.clear()
            changed, self._changed = self._changed, set()
            try:
                await self.reload(changed)
            except Exception:
                log_failure(log, "routing: reloading %d chute(s) failed; retrying", len(changed))
                self._changed |= changed
                self._wake.set()
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _keep(self, listener: asyncpg.Connection) -> None:
        """Watch the listening connection; when it is lost, listen again and reload everything."""
        while True:
            await asyncio.sleep(RECONNECT_SECONDS)
            if not listener.is_closed():
                continue
            log.warning("routing: lost the database notifications; reconnecting")
            try:
                listener = await self._listen()
                await self.reload()
            except Exception as failure:
                log.warning("routing: reconnect failed (%s); retrying", failure)
