"""Invocation records (issue 11): the metrics service turning Envoy's access log into rows.

Two measurements:

* `ingest`: the pure-ingestion run. STREAMS gRPC streams to the metrics service's own port (as
  Envoy's ALS client connects to it: one stream per Envoy worker), each sending pre-built
  `StreamAccessLogsMessage`s of ENTRIES_PER_MESSAGE entries (what Envoy's 64 KiB buffer holds
  under load) as fast as gRPC's flow control lets it, for the run's duration. Then it waits until
  every entry sent is a row of `metrics.invocations`. Records per second = entries sent / (end of
  the last row - start); entries not there after DRAIN_TIMEOUT_SECONDS are counted as lost.
* `Accounting`: around a load run through the gateway, the calls Envoy's counters say it took
  on the echo chute's host against the rows recorded for the chute meanwhile.

Every run gets a chute id of its own (the ingestion runs: a made-up one, which the registry's
count update skips), so rows are counted by the `(chute_id, started_at)` index.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

#: Streams at once, and entries per message (Envoy flushes its buffer when it passes 64 KiB; an
#: entry here serializes to 648 bytes, so a busy gateway's messages hold ~100).
STREAMS = 4
ENTRIES_PER_MESSAGE = 100
#: How long the rows may take to appear after the last message was sent.
DRAIN_TIMEOUT_SECONDS = 60.0
#: How long Envoy's counters and the rows may take to agree after a gateway run (Envoy flushes its
#: access-log buffer every 0.5 s; the service writes every 0.5 s).
SETTLE_TIMEOUT_SECONDS = 30.0
#: Before a run, the chute's rows must stay unchanged this long (both flush intervals and a
#: margin): the warm-up's last calls are recorded before the counts are taken.
QUIET_SECONDS = 1.5
POLL_SECONDS = 0.05
STREAM_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
#: Stands for a message's number in its serialized form (replaced by 12 hex digits per message),
#: so building a message is one bytes.replace, not 120 protobuf entries.
_COUNTER = b"@@@@@@@@@@@@"


def _entry(chute_id: str, run: str, index: int) -> Any:
    """One HTTPAccessLogEntry as Envoy logs an answered echo call (the fields section 6 of
    runtime-facts.md lists, and the others Envoy fills for an HTTP/1.1 call)."""
    from envoy.config.core.v3 import address_pb2, base_pb2
    from envoy.data.accesslog.v3 import accesslog_pb2

    def address(port: int) -> Any:
        socket = address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        return address_pb2.Address(socket_address=socket)

    entry = accesslog_pb2.HTTPAccessLogEntry(protocol_version=accesslog_pb2.HTTPAccessLogEntry.HTTP11)
    common = entry.common_properties
    common.downstream_remote_address.CopyFrom(address(40000 + index))
    common.downstream_direct_remote_address.CopyFrom(address(40000 + index))
    common.downstream_local_address.CopyFrom(address(8000))
    common.upstream_remote_address.CopyFrom(address(43123))
    common.upstream_local_address.CopyFrom(address(50000 + index))
    common.start_time.FromNanoseconds(time.time_ns())
    common.duration.FromMicroseconds(1850)
    common.time_to_last_rx_byte.FromMicroseconds(12)
    common.time_to_first_upstream_tx_byte.FromMicroseconds(640)
    common.time_to_last_upstream_tx_byte.FromMicroseconds(650)
    common.time_to_first_upstream_rx_byte.FromMicroseconds(1790)
    common.time_to_last_upstream_rx_byte.FromMicroseconds(1800)
    common.time_to_first_downstream_tx_byte.FromMicroseconds(1820)
    common.time_to_last_downstream_tx_byte.FromMicroseconds(1840)
    common.upstream_cluster = "echo-bench.localhost"
    common.route_name = "chutes"
    common.upstream_request_attempt_count = 1
    common.stream_id = uuid.uuid4().hex
    common.downstream_wire_bytes_sent, common.downstream_wire_bytes_received = 230, 250
    common.upstream_wire_bytes_sent, common.upstream_wire_bytes_received = 420, 200
    common.custom_tags["chute_id"] = chute_id
    common.custom_tags["instance_id"] = str(uuid.uuid4())
    request = entry.request
    request.request_method = base_pb2.RequestMethod.POST
    request.scheme, request.authority, request.path = "http", "echo-bench.localhost", "/echo"
    request.user_agent = "wrk"
    # 36 characters, like Envoy's UUIDs, unique per run; the message number goes in at _COUNTER.
    request.request_id = f"{_COUNTER.decode()}-{index:05d}-{run}"
    request.request_headers_bytes, request.request_body_bytes = 210, 14
    request.request_headers["x-chutes-chute-id"] = chute_id
    request.request_headers["x-chutes-user-id"] = str(uuid.uuid4())
    response = entry.response
    response.response_code.value = 200
    response.response_headers_bytes, response.response_body_bytes = 180, 14
    response.response_code_details = "via_upstream"
    response.response_headers["x-chutes-invocationid"] = request.request_id
    return entry


def message_template(chute_id: str) -> tuple[bytes, bytes]:
    """The serialized identifier (Envoy sends it in a stream's first message only) and a message
    of ENTRIES_PER_MESSAGE entries whose request ids hold _COUNTER."""
    from envoy.service.accesslog.v3 import als_pb2

    first = als_pb2.StreamAccessLogsMessage()
    first.identifier.log_name = "invocations"
    first.identifier.node.id = "chutes-gateway"
    first.identifier.node.cluster = "chutes-gateway"
    message = als_pb2.StreamAccessLogsMessage()
    run = uuid.uuid4().hex[:17]
    message.http_logs.log_entry.extend(_entry(chute_id, run, i) for i in range(ENTRIES_PER_MESSAGE))
    return first.SerializeToString(), message.SerializeToString()


def _send(
    address: str, identifier: bytes, template: bytes, stream: int, until: float, sent: list[int]
) -> None:
    """One stream until `until`; adds the entries the server took to `sent[stream]`."""
    import grpc

    def messages() -> Any:
        number = stream << 40  # each stream's message numbers are its own
        prefix = identifier
        while time.monotonic() < until:
            yield prefix + template.replace(_COUNTER, b"%012x" % number)
            prefix = b""
            number += 1
            sent[stream] += ENTRIES_PER_MESSAGE

    with grpc.insecure_channel(address) as channel:
        # Serialized messages as they are: None serializers pass bytes through.
        call: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
            STREAM_METHOD, request_serializer=None, response_deserializer=None
        )
        call(messages(), timeout=until - time.monotonic() + DRAIN_TIMEOUT_SECONDS)


@dataclass
class Ingested:
    sent: int
    written: int
    #: From the first message to the last row, and from the last message sent to the last row.
    elapsed: float
    lag: float


def ingest(database_url: str, address: str, duration: float) -> Ingested:
    chute_id = str(uuid.uuid4())
    identifier, template = message_template(chute_id)
    sent = [0] * STREAMS
    started = time.monotonic()
    until = started + duration
    threads = [
        threading.Thread(target=_send, args=(address, identifier, template, i, until, sent))
        for i in range(STREAMS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every stream has ended (its call answered): the service holds every entry sent. (A message
    # is counted when gRPC asks for the next one, and it asks once more after the last.)
    total, stopped = sum(sent), time.monotonic()
    deadline = stopped + DRAIN_TIMEOUT_SECONDS
    written = rows_of(database_url, chute_id)
    while written < total and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        written = rows_of(database_url, chute_id)
    done = time.monotonic()
    return Ingested(total, written, done - started, done - stopped)


def rows_of(database_url: str, chute_id: str) -> int:
    """Rows of `metrics.invocations` for the chute."""
    import asyncpg

    query = "SELECT count(*) FROM metrics.invocations WHERE chute_id = $1"

    async def count() -> int:
        connection = await asyncpg.connect(database_url)
        try:
            return int(await connection.fetchval(query, chute_id))
        finally:
            await connection.close()

    return asyncio.run(count())


#: Envoy's REST and gRPC routes of the services: requests on them are not chute calls.
SERVICE_CLUSTERS = ("identity", "registry", "jobs", "attestation", "metrics")


def envoy_chute_calls(admin_address: str) -> int:
    """Requests Envoy has taken on chute hosts so far: all the gateway listener took, less those it
    sent to the services' clusters (the miner's reports during a run). Totals, not completions:
    a call the client resets (wrk's last ones, cut off when a run ends) is logged too. Envoy
    keeps no per-chute counters (the chute clusters' stats are off, issue 11)."""
    with urllib.request.urlopen(f"http://{admin_address}/stats?usedonly", timeout=5) as reply:
        counters = dict(line.partition(": ")[::2] for line in reply.read().decode().splitlines())
    services = sum(int(counters.get(f"cluster.{name}.upstream_rq_total", 0)) for name in SERVICE_CLUSTERS)
    return int(counters.get("http.gateway.downstream_rq_total", 0)) - services


@dataclass
class Accounting:
    """The calls Envoy took on the echo chute's host vs the rows recorded for it meanwhile."""

    database_url: str
    admin_address: str
    chute_id: str
    envoy_before: int = 0
    rows_before: int = 0

    def start(self) -> None:
        rows, quiet_since = rows_of(self.database_url, self.chute_id), time.monotonic()
        while time.monotonic() - quiet_since < QUIET_SECONDS:
            time.sleep(0.25)
            if (now := rows_of(self.database_url, self.chute_id)) != rows:
                rows, quiet_since = now, time.monotonic()
        self.envoy_before = envoy_chute_calls(self.admin_address)
        self.rows_before = rows_of(self.database_url, self.chute_id)

    def settle(self) -> tuple[int, int]:
        """(calls Envoy took, rows recorded) once they agree, or as they stand after
        SETTLE_TIMEOUT_SECONDS."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while True:
            calls = envoy_chute_calls(self.admin_address) - self.envoy_before
            rows = rows_of(self.database_url, self.chute_id) - self.rows_before
            if rows == calls or time.monotonic() > deadline:
                return calls, rows
            time.sleep(0.25)
