"""Invocation records: one row per call to a chute host, from the gateway's access log (Envoy's
gRPC ALS streams one entry per call when its response ends; runtime-facts.md section 6).

Entries are kept in memory and written in batches (every FLUSH_SECONDS, or at once when
BATCH_SIZE are waiting; a batch is all that waits), one COPY per batch: a third of the client CPU
of an INSERT ... SELECT FROM unnest, whose arrays asyncpg checks element by element
(bench/README.md, records-ingest). A batch that fails to write (the database restarting) is kept
and retried, with newer entries queued behind it: none is lost while the process lives. COPY
cannot skip rows, so a batch that meets an invocation id already recorded (a retried batch that
had in fact been committed, or a client's own x-request-id seen twice) is written again with
store.add_invocations, which is idempotent: nothing is added twice. At most MAX_PENDING entries
wait (~30 s of the gateway's highest rate here while the database is away); beyond that the
streams are not read until the database catches up: memory stays bounded, gRPC's flow control
holds Envoy back, and Envoy drops what overflows its own buffer (its access-log `logs_dropped`
counter) rather than this process growing without end.

After each batch, the chutes' `invocation_count` (the registry's) grows by the calls the batch
recorded that an instance answered; counts the registry could not take are sent with the next
batch.

A graceful stop loses nothing received: the kit stops the gRPC server first (Envoy's streams end;
an entry is either in `_pending` or was never accepted), then closes the pool, and before it
closes `drain` writes every pending record and sends the registry every count (`up` stops the
metrics service before the registry). Only a crash loses what waits for its batch (at most
FLUSH_SECONDS of calls).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
from services.kit.db import Database, log_failure
from services.kit.headers import USER_ID_HEADER
from services.metrics import store

log = logging.getLogger(__name__)

#: The longest an entry waits to be written, and how many waiting are written at once.
FLUSH_SECONDS = 0.5
BATCH_SIZE = 1000
#: The most entries held before the streams wait for the writer: ~0.6 KB each in memory (~60 MB),
#: and ~1-2 s of writing at the measured rate (so a stop drains them within DRAIN_SECONDS).
MAX_PENDING = 100 * BATCH_SIZE
#: Waits between attempts of a batch that failed to write (then the last, repeated).
RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0)
REGISTRY_SECONDS = 5.0
#: The most a stopping service waits for its last records and counts (`up` gives each service its
#: shutdown grace plus 5 s after SIGTERM, and the grace is spent before this starts).
DRAIN_SECONDS = 4.0
CHUTE_HEADER = "x-chutes-chute-id"
VIA_UPSTREAM = "via_upstream"
#: The columns of a Record, in its order (store.Record).
COLUMNS = (
    "invocation_id", "chute_id", "instance_id", "path", "user_id", "status", "duration_ms", "ttfb_ms",
    "bytes_in", "bytes_out", "error", "started_at", "input_tokens", "output_tokens", "first_token_ms",
    "tokens_per_second",
)  # fmt: skip


def record_of(entry: Any) -> store.Record | None:
    """The record of one HTTPAccessLogEntry; None for calls that named no chute (an unknown host).
    Hot: every field is read once into a local (each read of a protobuf field builds an object)."""
    request, common = entry.request, entry.common_properties
    headers = request.request_headers
    tags = common.custom_tags
    chute_id = headers.get(CHUTE_HEADER) or tags.get("chute_id")
    request_id = request.request_id
    if not chute_id or not request_id:
        return None
    response = entry.response
    details = response.response_code_details
    started, duration = common.start_time, common.duration
    path = request.path
    if "?" in path:
        path = path.partition("?")[0]
    if common.HasField("time_to_first_upstream_rx_byte"):
        first = common.time_to_first_upstream_rx_byte
        ttfb_ms: float | None = first.seconds * 1000 + first.nanos / 1e6
    else:
        ttfb_ms = None
    output_tokens = tags.get("output_tokens")
    usage = (
        (_number(tags.get("input_tokens"), int), _number(output_tokens, int),
         _number(tags.get("first_token_ms"), float), _number(tags.get("tokens_per_second"), float))
        if output_tokens or tags.get("input_tokens")
        else _NO_USAGE
    )  # fmt: skip
    return (
        request_id,
        chute_id,
        tags.get("instance_id") or None,
        path,
        headers.get(USER_ID_HEADER) or None,
        response.response_code.value,
        duration.seconds * 1000 + duration.nanos / 1e6,
        ttfb_ms,
        request.request_body_bytes,
        response.response_body_bytes,
        None if details == VIA_UPSTREAM else details or None,
        datetime.fromtimestamp(started.seconds + started.nanos / 1e9, UTC),
        *usage,
    )


_NO_USAGE = (None, None, None, None)
_MAX_INTEGER = 2**31


def _number(text: str | None, kind: type[int] | type[float]) -> Any:
    """A tag's number (gateway/usage.lua writes them as text); None when absent, malformed or out
    of its column's range (a chute reports its own usage: it must not stop a batch from writing)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if not (math.isfinite(value) and 0 <= value < _MAX_INTEGER):
        return None
    return int(value) if kind is int else value


class Records(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, db: Database, registry: internal_pb2_grpc.RegistryInternalServiceAsyncStub) -> None:
        self.db = db
        self.registry = registry
        self._pending: list[store.Record] = []
        #: Invocations not yet added to the registry's counts, per chute.
        self._counts: dict[str, int] = {}
        self._full = asyncio.Event()
        #: Set while fewer than MAX_PENDING entries wait (the streams read on).
        self._room = asyncio.Event()
        self._room.set()
        self._writing: asyncio.Task[None] | None = None
        #: Set by `drain`: the writer empties what is pending and the counts, then ends.
        self._stopping = False
        # The server stops before the pool closes: what the streams delivered is all in
        # `_pending` by then, and is written before the pool goes.
        db.before_close(self.drain)

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> als_pb2.StreamAccessLogsResponse:
        self._ensure_writer()
        async for message in request_iterator:
            # The writer swaps `_pending` for a new list, only while this loop awaits.
            pending = self._pending
            # filter(None, ...) drops the Nones (a record is a non-empty tuple), all in C.
            pending.extend(filter(None, map(record_of, message.http_logs.log_entry)))
            if len(pending) >= BATCH_SIZE:
                self._full.set()
                if len(pending) >= MAX_PENDING:
                    self._room.clear()
                    await self._room.wait()
        return als_pb2.StreamAccessLogsResponse()

    def _ensure_writer(self) -> None:
        if not self._stopping and (self._writing is None or self._writing.done()):
            self._writing = asyncio.create_task(self._write_forever())

    async def drain(self) -> None:
        """Write every record received and send the registry every count, then stop writing.
        Called when the service stops (after its server stopped taking calls, before the pool
        closes); gives up after DRAIN_SECONDS (the database or the registry is gone), saying
        what it could not write."""
        self._stopping = True
        if self._pending and (self._writing is None or self._writing.done()):
            self._writing = asyncio.create_task(self._write_forever())
        if self._writing is not None:
            self._full.set()
            try:
                # Not cancelled on time-out before the deadline: a batch cut off mid-statement
                # may be committed without its counts being known.
                await asyncio.wait_for(asyncio.shield(self._writing), DRAIN_SECONDS)
            except TimeoutError:
                self._writing.cancel()
        if self._pending or self._counts:
            log.error(
                "records: stopping with %d invocations unwritten and %d invocations uncounted",
                len(self._pending), sum(self._counts.values()),
            )  # fmt: skip

    async def _write_forever(self) -> None:
        while not (self._stopping and not self._pending and not self._counts):
            if len(self._pending) < BATCH_SIZE and not self._stopping:
                try:
                    await asyncio.wait_for(self._full.wait(), FLUSH_SECONDS)
                except TimeoutError:
                    pass
            self._full.clear()
            if self._pending:
                # All that waits, in one COPY (at most MAX_PENDING): taking BATCH_SIZE at a time
                # copied the rest of the list each time.
                batch, self._pending = self._pending, []
                answered = await self._write(batch)
                if len(self._pending) < MAX_PENDING:
                    self._room.set()
                counts = self._counts
                for chute_id in answered:
                    counts[chute_id] = counts.get(chute_id, 0) + 1
            # While stopping, counts go once everything is written (one call, not one per batch).
            if self._counts and not (self._stopping and self._pending):
                if not await self._add_counts() and self._stopping:
                    await asyncio.sleep(RETRY_SECONDS[0])

    async def _write(self, batch: list[store.Record]) -> list[str]:
        """Write `batch` (retried until it is written); the chutes of the calls an instance
        answered among those newly recorded."""
        attempt = 0
        while True:
            try:
                async with self.db.raw() as connection:
                    try:
                        await connection.copy_records_to_table("invocations", records=batch, columns=COLUMNS)
                    except asyncpg.UniqueViolationError:
                        # Some are recorded already: this statement skips them (and so does the
                        # count, which it takes from the rows it actually added).
                        return await store.add_invocations(connection, batch)
                    return [record[1] for record in batch if record[10] is None]
            except asyncio.CancelledError:
                self._pending[:0] = batch
                raise
            except Exception:
                wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log_failure(log, "records: writing %d invocations failed; retrying in %ss", len(batch), wait)
                attempt += 1
                await asyncio.sleep(wait)

    async def _add_counts(self) -> bool:
        """Send the counts; those the registry did not take are kept for the next call."""
        counts, self._counts = self._counts, {}
        request = internal_pb2.AddInvocationsRequest(
            counts=[internal_pb2.ChuteCount(chute_id=c, count=n) for c, n in counts.items()]
        )
        try:
            await self.registry.AddInvocations(request, timeout=REGISTRY_SECONDS)
            return True
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
            if isinstance(error, grpc.aio.AioRpcError):
                log.warning("records: the registry did not take invocation counts (%s); kept", error.code())
            for chute_id, count in counts.items():
                self._counts[chute_id] = self._counts.get(chute_id, 0) + count
            if isinstance(error, asyncio.CancelledError):
                raise
            return False
