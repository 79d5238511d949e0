"""Chute invocations through a real Envoy, routed by the registry's delta ADS control plane.

The control plane (services/registry/xds.py and ads.py) is served in-process, as the registry serves it;
the gateway config is rendered by gateway/render.py with `xds_address`; the chute instances are
real HTTP processes (uvicorn) that count their in-flight requests and stream SSE. The first tests
speak the delta protocol directly to pin what Envoy is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from gateway.render import INVOCATION_ID_HEADER, MAX_JSON_BODY_BYTES, render, write_config
from services.kit.headers import CALLER_HEADERS
from services.kit.interceptors import RequestInterceptor
from services.kit.settings import SERVICE_NAMES
from services.registry.ads import AdsServicer, add_to_server
from services.registry.xds import CLUSTER_TYPE, ENDPOINT_TYPE, ChuteRoute, Endpoint, RoutingTable
from tests.conftest import _Loop, free_port, start_envoy

ECHO_ID = "11111111-0000-4000-8000-000000000001"
COLD_ID = "11111111-0000-4000-8000-000000000002"
SOLO_ID = "11111111-0000-4000-8000-000000000003"
LATE_ID = "11111111-0000-4000-8000-000000000004"
FRAGILE_ID = "11111111-0000-4000-8000-000000000005"

UPSTREAM_APP = textwrap.dedent(
    """
    import asyncio, json, os
    from urllib.parse import parse_qs

    NAME = os.environ["INSTANCE_NAME"]
    STATE = {"inflight": 0, "max": 0, "served": 0}

    async def reply(send, body, status=200):
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    async def app(scope, receive, send):
        assert scope["type"] == "http"
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        if path == "/stats":
            return await reply(send, STATE)
        if path == "/reset":
            STATE.update(inflight=0, max=0, served=0)
            return await reply(send, STATE)
        STATE["served"] += 1
        if path == "/slow":
            STATE["inflight"] += 1
            STATE["max"] = max(STATE["max"], STATE["inflight"])
            try:
                await asyncio.sleep(int(query.get("ms", "300")) / 1000)
            finally:
                STATE["inflight"] -= 1
            return await reply(send, {"instance": NAME})
        if path == "/sse":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(int(query.get("n", "5"))):
                await send({"type": "http.response.body", "body": f"data: {i}\\n\\n".encode(),
                            "more_body": True})
                await asyncio.sleep(int(query.get("ms", "200")) / 1000)
            return await send({"type": "http.response.body", "body": b""})
        if path == "/fail":
            return await reply(send, {"oops": NAME}, status=int(query.get("status", "500")))
        if path == "/upload":
            size = 0
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            return await reply(send, {"instance": NAME, "bytes": size})
        await reply(send, {"instance": NAME, "host": headers.get("host"), "path": path,
                           "chute_id": headers.get("x-chutes-chute-id"),
                           "request_id": headers.get("x-request-id"), "headers": sorted(headers)})
    """
)


# ---- fixtures ---------------------------------------------------------------------------------


@dataclass
class Upstream:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    def endpoint(self, instance_id: str | None = None) -> Endpoint:
        return Endpoint(instance_id or self.name, "127.0.0.1", self.port)

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/reset", timeout=5).close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_upstreams(app_dir: Path, names: list[str]) -> list[Upstream]:
    upstreams = []
    for name in names:
        port = free_port()
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "upstream:app"),
                *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"),
                *("--log-level", "warning", "--no-access-log"),
            ],
            env={**os.environ, "INSTANCE_NAME": name},
        )
        upstreams.append(Upstream(name, port, process))
    deadline = time.monotonic() + 30
    for upstream in upstreams:
        while not _accepts(upstream.port):
            assert upstream.process.poll() is None, f"upstream {upstream.name} exited"
            assert time.monotonic() < deadline, f"upstream {upstream.name} did not start"
            time.sleep(0.05)
    return upstreams


@pytest.fixture(scope="module")
def app_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="chutes-test-upstream-") as tmp:
        (Path(tmp) / "upstream.py").write_text(UPSTREAM_APP)
        yield Path(tmp)


@pytest.fixture(scope="module")
def upstreams(app_dir: Path) -> Iterator[dict[str, Upstream]]:
    started = start_upstreams(app_dir, ["a", "b"])
    try:
        yield {u.name: u for u in started}
    finally:
        for upstream in started:
            upstream.stop()


@pytest.fixture(scope="module")
def loop() -> Iterator[_Loop]:
    running = _Loop()
    yield running
    running.close()


class _AccessLogSink(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Collects the gateway's access-log entries (the metrics service's side of ALS)."""

    def __init__(self) -> None:
        self.entries: list[accesslog_pb2.HTTPAccessLogEntry] = []

    async def StreamAccessLogs(self, request_iterator: Any, context: Any) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            self.entries.extend(message.http_logs.log_entry)
        return als_pb2.StreamAccessLogsResponse()


async def _serve_als(sink: _AccessLogSink) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _serve(table: RoutingTable, listen: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, int]:
    # As the registry serves it: behind the interceptor every service runs.
    server = grpc.aio.server(interceptors=[RequestInterceptor()])
    add_to_server(AdsServicer(table), server)
    port = server.add_insecure_port(listen)
    await server.start()
    return server, port


@dataclass
class Gateway:
    url: str
    admin: str
    table: RoutingTable
    loop: _Loop
    upstreams: dict[str, Upstream]
    server: grpc.aio.Server
    control_plane_port: int
    access_log: _AccessLogSink

    def wait_acked(self, generation: int, timeout: float = 10) -> float:
        """Seconds until every connected Envoy ACKed `generation`."""
        start = time.perf_counter()

        async def wait() -> None:
            async with asyncio.timeout(timeout):
                await self.table.wait_acked(generation)

        self.loop.run(wait())
        return time.perf_counter() - start


@pytest.fixture(scope="module")
def gateway(loop: _Loop, upstreams: dict[str, Upstream]) -> Iterator[Gateway]:
    table = RoutingTable("localhost")
    # Loaded before the control plane answers anyone, as the registry loads it from the database.
    table.load(
        [
            ChuteRoute(ECHO_ID, "echo", 4, (upstreams["a"].endpoint("echo-a"),)),
            ChuteRoute(COLD_ID, "cold", 1),
            ChuteRoute(
                SOLO_ID, "solo", 1, (upstreams["a"].endpoint("solo-a"), upstreams["b"].endpoint("solo-b"))
            ),
            ChuteRoute(LATE_ID, "late", 2),
        ]
    )
    table.mark_ready()
    server, cp_port = loop.run(_serve(table, "127.0.0.1:0"))  # type: ignore[misc]
    cp = f"127.0.0.1:{cp_port}"
    sink = _AccessLogSink()
    als_server, als_port = loop.run(_serve_als(sink))  # type: ignore[misc]
    with tempfile.TemporaryDirectory(prefix="chutes-test-invoke-") as tmp:
        port = free_port()
        addresses = {name: f"127.0.0.1:{free_port()}" for name in SERVICE_NAMES}
        addresses["registry"] = cp  # the registry is the control plane: its cluster carries ADS
        config = write_config(
            Path(tmp) / "envoy.json",
            addresses,
            authz_address=f"127.0.0.1:{free_port()}",
            port=port,
            xds_address=cp,
            chute_domain="localhost",
            als_address=f"127.0.0.1:{als_port}",
        )
        admin_file = Path(tmp) / "admin"
        envoy = start_envoy(config, admin_file)
        admin = admin_file.read_text().strip()
        running = Gateway(f"http://127.0.0.1:{port}", admin, table, loop, upstreams, server, cp_port, sink)
        try:
            running.wait_acked(table.generation)
            yield running
        finally:
            envoy.terminate()
            envoy.wait(10)
            loop.run(running.server.stop(0))
            loop.run(als_server.stop(0))


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def invoke(http: httpx.Client, slug: str, path: str = "/", **kwargs: Any) -> httpx.Response:
    headers = {"host": f"{slug}.localhost", **kwargs.pop("headers", {})}
    return http.get(path, headers=headers, **kwargs)


def assert_detail(response: httpx.Response, status: int, detail: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": detail}
    assert response.headers.get(INVOCATION_ID_HEADER)


# ---- the delta protocol, spoken directly --------------------------------------------------------


def _route(slug: str, concurrency: int, *ports: int) -> ChuteRoute:
    return ChuteRoute(
        f"id-{slug}", slug, concurrency, tuple(Endpoint(f"{slug}-{p}", "127.0.0.1", p) for p in ports)
    )


def test_instance_changes_never_touch_the_cluster() -> None:
    table = RoutingTable()
    table.set_chute(_route("x", 2, 9001))
    clusters = table.versions(CLUSTER_TYPE)
    assignments = table.versions(ENDPOINT_TYPE)
    table.add_instance("id-x", Endpoint("x-9002", "127.0.0.1", 9002))
    assert table.versions(CLUSTER_TYPE) == clusters
    assert table.versions(ENDPOINT_TYPE) != assignments
    # Content hashes: the same state gives the same versions, whatever the path to it.
    table.remove_instance("id-x", "x-9002")
    assert table.versions(ENDPOINT_TYPE) == assignments
    generation = table.generation
    assert table.set_chute(_route("x", 2, 9001)) == generation  # no change, no new generation
    with pytest.raises(ValueError, match="belongs to"):
        table.set_chute(ChuteRoute("other", "x", 1))
    with pytest.raises(ValueError, match="IP address"):
        Endpoint("i", "example.com", 80)


def _cluster(table: RoutingTable, slug: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster.FromString(table._snapshot.clusters[table.cluster_name(slug)].resource.value)


def test_outlier_detection_only_while_the_chute_has_instances() -> None:
    """Each detector works on Envoy's main thread: 30,000 of them were ~80% of an idle
    gateway's CPU. A chute without instances has nothing to eject, so its cluster carries none,
    and the cluster changes only when the chute goes from none to some instances or back."""
    table = RoutingTable()
    table.set_chute(_route("x", 2))
    cold, cold_assignment = table.versions(CLUSTER_TYPE), table.versions(ENDPOINT_TYPE)
    assert not _cluster(table, "x").HasField("outlier_detection")
    assert _cluster(table, "x").metadata.filter_metadata["chutes"].fields["chute_id"].string_value == "id-x"
    generation = table.generation
    assert table.add_instance("id-x", Endpoint("x-9001", "127.0.0.1", 9001)) == generation + 1
    warm = table.versions(CLUSTER_TYPE)
    assert warm != cold  # one generation changes the Cluster and its assignment together
    assert table.versions(ENDPOINT_TYPE) != cold_assignment
    detection = _cluster(table, "x").outlier_detection
    assert detection.consecutive_local_origin_failure.value == 1
    assert detection.split_external_local_origin_errors
    assert (detection.enforcing_consecutive_5xx.value, detection.enforcing_success_rate.value) == (0, 0)
    table.add_instance("id-x", Endpoint("x-9002", "127.0.0.1", 9002))
    table.remove_instance("id-x", "x-9001")
    table.add_instance("id-x", Endpoint("x-9002", "127.0.0.2", 9002))  # moved
    assert table.versions(CLUSTER_TYPE) == warm  # EDS only while some remain
    table.remove_instance("id-x", "x-9002")
    assert table.versions(CLUSTER_TYPE) == cold  # content hashes: back to the cold cluster
    assert not _cluster(table, "x").HasField("outlier_detection")
    assert table.versions(ENDPOINT_TYPE) == cold_assignment
    table.set_chute(_route("x", 2, 9003))  # however the chute gets its instances
    assert table.versions(CLUSTER_TYPE) == warm


class _DeltaClient:
    """A delta ADS stream as Envoy drives it."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).DeltaAggregatedResources()
        self.responses: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse] = asyncio.Queue()
        # Reading in a task of its own: cancelling a read would cancel the whole call.
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            self.responses.put_nowait(response)

    async def send(self, type_url: str, **fields: Any) -> None:
        await self.call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, **fields))

    async def receive(self, within: float = 5) -> discovery_pb2.DeltaDiscoveryResponse:
        async with asyncio.timeout(within):
            return await self.responses.get()

    async def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.send(response.type_url, response_nonce=response.nonce)

    async def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()
        await self.channel.close()


def _names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return sorted(r.name for r in response.resources)


def test_delta_protocol(loop: _Loop) -> None:
    async def scenario() -> None:
        table = RoutingTable("chutes.test")
        table.load([_route("alpha", 2, 9001), _route("beta", 1)])
        server, port = await _serve(table)
        target = f"127.0.0.1:{port}"
        try:
            # Not ready (not loaded from the database yet): the stream gets no answer at all.
            client = _DeltaClient(target)
            await client.send(CLUSTER_TYPE, node={"id": "test"})
            with pytest.raises(TimeoutError):
                await client.receive(within=0.3)
            table.mark_ready()
            clusters = await client.receive()
            assert clusters.type_url == CLUSTER_TYPE
            assert _names(clusters) == ["alpha.chutes.test", "beta.chutes.test"]
            cluster = cluster_pb2.Cluster.FromString(clusters.resources[0].resource.value)
            assert cluster.type == cluster_pb2.Cluster.EDS
            assert cluster.circuit_breakers.per_host_thresholds[0].max_connections.value == 2
            assert cluster.metadata.filter_metadata["chutes"].fields["chute_id"].string_value == "id-alpha"
            assert not cluster.HasField("load_assignment")  # instances only ever go over EDS
            await client.ack(clusters)
            await client.send(ENDPOINT_TYPE, resource_names_subscribe=_names(clusters))
            endpoints = await client.receive()
            assert endpoints.type_url == ENDPOINT_TYPE
            assert _names(endpoints) == ["alpha.chutes.test", "beta.chutes.test"]
            await client.ack(endpoints)
            async with asyncio.timeout(5):
                await table.wait_acked()

            # An instance change goes over EDS alone, for that chute alone.
            generation = table.add_instance("id-alpha", Endpoint("alpha-9002", "127.0.0.1", 9002))
            update = await client.receive()
            assert (update.type_url, _names(update)) == (ENDPOINT_TYPE, ["alpha.chutes.test"])
            assignment = endpoint_pb2.ClusterLoadAssignment.FromString(update.resources[0].resource.value)
            assert sorted(
                e.endpoint.address.socket_address.port_value for e in assignment.endpoints[0].lb_endpoints
            ) == [
                9001,
                9002,
            ]
            await client.ack(update)
            async with asyncio.timeout(5):
                await table.wait_acked(generation)

            # A cluster change resends the cluster, then its assignment (or it would stay warming).
            table.set_chute(ChuteRoute("id-beta", "beta", 3))
            cds = await client.receive()
            eds = await client.receive()
            assert (cds.type_url, _names(cds)) == (CLUSTER_TYPE, ["beta.chutes.test"])
            assert (eds.type_url, _names(eds)) == (ENDPOINT_TYPE, ["beta.chutes.test"])
            await client.ack(cds)
            await client.ack(eds)

            # Removal.
            table.remove_chute("id-alpha")
            removed = await client.receive()
            assert (removed.type_url, list(removed.removed_resources)) == (
                CLUSTER_TYPE,
                ["alpha.chutes.test"],
            )
            await client.ack(removed)
            await client.send(ENDPOINT_TYPE, resource_names_unsubscribe=["alpha.chutes.test"])
            async with asyncio.timeout(5):
                await table.wait_acked()
            cluster_versions = table.versions(CLUSTER_TYPE)
            endpoint_versions = table.versions(ENDPOINT_TYPE)
            await client.close()

            # A reconnect that reports what it has is sent nothing but the (empty) answers its
            # initial requests are owed.
            again = _DeltaClient(target)
            await again.send(CLUSTER_TYPE, initial_resource_versions=cluster_versions)
            await again.send(
                ENDPOINT_TYPE,
                resource_names_subscribe=sorted(endpoint_versions),
                initial_resource_versions=endpoint_versions,
            )
            first, second = await again.receive(), await again.receive()
            assert {first.type_url, second.type_url} == {CLUSTER_TYPE, ENDPOINT_TYPE}
            assert not (
                first.resources or first.removed_resources or second.resources or second.removed_resources
            )
            await again.close()

            # State of the world is refused, politely.
            channel = grpc.aio.insecure_channel(target)
            sotw = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                # The write itself may fail: the server can refuse before reading anything.
                await sotw.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE))
                await sotw.read()
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "DELTA_GRPC" in (refused.value.details() or "")
            await channel.close()
        finally:
            await server.stop(0)

    loop.run(scenario())


def test_render_without_control_plane_is_unchanged() -> None:
    addresses = {name: f"127.0.0.1:{1000 + i}" for i, name in enumerate(SERVICE_NAMES)}
    plain = render(addresses, authz_address="127.0.0.1:999", port=1)
    assert "dynamic_resources" not in plain
    hcm = plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [v["name"] for v in hcm["route_config"]["virtual_hosts"]] == ["chutes"]
    # Only the edge's own replies (431 and the like) are shaped: no chute host's.
    assert not any("header_filter" in json.dumps(m) for m in hcm["local_reply_config"]["mappers"])
    # A control plane that is not the registry gets its own cluster.
    other = render(
        addresses, authz_address="127.0.0.1:999", port=1, xds_address="127.0.0.1:7", als_address="127.0.0.1:8"
    )
    names = [c["name"] for c in other["static_resources"]["clusters"]]
    assert {"xds", "als"} <= set(names)
    grpc_service = other["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
    assert grpc_service["cluster_name"] == "xds"


# ---- through Envoy ------------------------------------------------------------------------------


def test_host_reaches_the_chutes_instance(gateway: Gateway, http: httpx.Client) -> None:
    response = invoke(http, "echo", "/some/path?x=1", headers={"x-chutes-chute-id": "forged"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == response.headers[INVOCATION_ID_HEADER]
    del body["request_id"]
    # Only the gateway may tell who is calling: client copies of those headers never get through.
    caller = invoke(http, "echo", headers=dict.fromkeys(CALLER_HEADERS, "forged"))
    assert not set(CALLER_HEADERS) & set(caller.json()["headers"])
    assert "x-forwarded-proto" in body.pop("headers")
    assert body == {"instance": "a", "host": "echo.localhost", "path": "/some/path", "chute_id": ECHO_ID}
    invocation_id = response.headers[INVOCATION_ID_HEADER]
    # The invocation id is the gateway's, never the client's; the instance gets it too.
    forged = invoke(http, "echo", headers={"x-request-id": "forged"})
    assert forged.headers[INVOCATION_ID_HEADER] not in ("", "forged")
    assert forged.json()["request_id"] == forged.headers[INVOCATION_ID_HEADER]
    for slug in ("cold", "nope"):
        assert (
            invoke(http, slug, headers={"x-request-id": "forged"}).headers[INVOCATION_ID_HEADER] != "forged"
        )
    # A port in the host is fine; every answer gets its own invocation id.
    again = invoke(http, "echo", headers={"host": "echo.localhost:8000"})
    assert again.status_code == 200 and again.json()["instance"] == "a"
    assert again.headers[INVOCATION_ID_HEADER] not in ("", invocation_id)
    # Bodies are the chute's business: no REST body limit (MAX_JSON_BODY_BYTES) on invocations.
    size = MAX_JSON_BODY_BYTES + 1
    upload = http.post("/upload", content=b"x" * size, headers={"host": "echo.localhost"})
    assert upload.status_code == 200 and upload.json()["bytes"] == size
    # A chute's own errors are its own: not rewritten by the REST normaliser.
    failed = invoke(http, "echo", "/fail", params={"status": "500"})
    assert failed.status_code == 500 and failed.json() == {"oops": "a"}
    assert failed.headers.get(INVOCATION_ID_HEADER)


def test_unknown_chute_is_404_json(http: httpx.Client) -> None:
    assert_detail(invoke(http, "nope"), 404, "No matching chute found!")
    assert_detail(invoke(http, "registry"), 404, "No matching chute found!")  # not the gateway's own


def test_chute_without_instances_is_503_json(http: httpx.Client) -> None:
    assert_detail(invoke(http, "cold"), 503, f"No instances available (yet) for chute_id={COLD_ID}")


def test_rest_api_is_untouched(http: httpx.Client) -> None:
    response = http.get("/definitely/not/here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert INVOCATION_ID_HEADER not in response.headers


def test_chute_stats_are_rejected(gateway: Gateway) -> None:
    for name in ("chute-", "echo"):
        with urllib.request.urlopen(f"http://{gateway.admin}/stats?filter={name}", timeout=5) as r:
            assert r.read().decode().strip() == ""
    with urllib.request.urlopen(f"http://{gateway.admin}/clusters", timeout=5) as r:
        assert "echo.localhost::" in r.read().decode()  # the clusters are there, their stats are not


def test_added_instance_is_routable_at_once(gateway: Gateway, http: httpx.Client) -> None:
    assert invoke(http, "late").status_code == 503
    start = time.perf_counter()
    generation = gateway.table.add_instance(LATE_ID, gateway.upstreams["b"].endpoint("late-b"))
    attempts = 0
    while True:
        attempts += 1
        response = invoke(http, "late")
        if response.status_code == 200:
            break
        assert response.status_code == 503
        assert time.perf_counter() - start < 2, "instance not routable after 2 s"
    routable_ms = (time.perf_counter() - start) * 1000
    assert response.json()["instance"] == "b"
    assert response.json()["chute_id"] == LATE_ID
    gateway.wait_acked(generation)
    # And the ACK alone, for an instance moving (EDS only).
    start = time.perf_counter()
    generation = gateway.table.add_instance(LATE_ID, gateway.upstreams["a"].endpoint("late-a"))
    acked_ms = gateway.wait_acked(generation) * 1000
    print(
        f"\nrouting: set -> first request served {routable_ms:.1f} ms ({attempts} attempts);"
        f" EDS ACK {acked_ms:.1f} ms"
    )
    assert routable_ms < 100
    # Removing the instances makes the chute cold again.
    gateway.wait_acked(gateway.table.set_instances(LATE_ID, []))
    assert invoke(http, "late").status_code == 503


def test_concurrency_cap_per_instance(gateway: Gateway, http: httpx.Client) -> None:
    a, b = gateway.upstreams["a"], gateway.upstreams["b"]
    a.reset()
    b.reset()
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: invoke(http, "solo", "/slow", params={"ms": "400"}), range(4)))
    elapsed = time.perf_counter() - start
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    served = sorted(r.json()["instance"] for r in responses)
    stats_a, stats_b = a.stats(), b.stats()
    print(f"\nconcurrency 1 x 2 instances, 4 calls of 400 ms: {served}, {elapsed * 1000:.0f} ms")
    assert stats_a["max"] == 1 and stats_b["max"] == 1  # never more than `concurrency` in flight
    assert served == ["a", "a", "b", "b"]  # queued requests count for least request
    assert elapsed >= 0.8  # two rounds: the cap queued, it did not reject


def test_killed_instance_is_routed_around(gateway: Gateway, app_dir: Path, http: httpx.Client) -> None:
    [doomed] = start_upstreams(app_dir, ["c"])
    try:
        generation = gateway.table.set_chute(
            ChuteRoute(
                FRAGILE_ID,
                "fragile",
                2,
                (gateway.upstreams["b"].endpoint("fragile-b"), doomed.endpoint("fragile-c")),
            )
        )
        gateway.wait_acked(generation)
        seen = {invoke(http, "fragile").json()["instance"] for _ in range(6)}
        assert seen == {"b", "c"}
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(10)
        responses = [invoke(http, "fragile") for _ in range(20)]
        assert [r.status_code for r in responses] == [200] * 20, [
            r.text for r in responses if r.status_code != 200
        ]
        assert {r.json()["instance"] for r in responses} == {"b"}
    finally:
        doomed.stop()
        gateway.table.remove_chute(FRAGILE_ID)


def test_sse_streams_event_by_event(http: httpx.Client) -> None:
    start = time.perf_counter()
    arrivals: list[tuple[float, str]] = []
    with http.stream(
        "GET", "/sse", params={"n": "5", "ms": "200"}, headers={"host": "echo.localhost"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers.get(INVOCATION_ID_HEADER)
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.perf_counter() - start, line[6:]))
    total = time.perf_counter() - start
    assert [event for _, event in arrivals] == ["0", "1", "2", "3", "4"]
    first = arrivals[0][0]
    print(f"\nSSE: first event {first * 1000:.1f} ms, stream {total * 1000:.0f} ms")
    assert first < 0.5 and total > 0.9  # the first event came long before the stream ended
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.1  # one by one, not bunched


def test_local_reply_keeps_invocation_id_per_request(http: httpx.Client) -> None:
    ids = {invoke(http, "nope").headers[INVOCATION_ID_HEADER] for _ in range(3)}
    assert len(ids) == 3


def test_every_invocation_is_access_logged(gateway: Gateway, http: httpx.Client) -> None:
    served = invoke(http, "echo", "/logged")
    cold = invoke(http, "cold", "/logged")
    http.get("/logged-rest-path")  # REST traffic is not an invocation: not logged here
    wanted = {served.headers[INVOCATION_ID_HEADER], cold.headers[INVOCATION_ID_HEADER]}
    deadline = time.monotonic() + 5
    while True:
        entries = {e.request.request_id: e for e in gateway.access_log.entries if "logged" in e.request.path}
        if set(entries) >= wanted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert set(entries) == wanted
    ok = entries[served.headers[INVOCATION_ID_HEADER]]
    assert ok.response.response_code.value == 200
    assert dict(ok.common_properties.custom_tags) == {"chute_id": ECHO_ID, "instance_id": "echo-a"}
    assert ok.request.request_headers["x-chutes-chute-id"] == ECHO_ID
    no_instance = entries[cold.headers[INVOCATION_ID_HEADER]]
    assert no_instance.response.response_code.value == 503
    # No host was picked, so no upstream cluster either: the chute is in the route-set header.
    assert no_instance.request.request_headers["x-chutes-chute-id"] == COLD_ID
    assert "chute_id" not in no_instance.common_properties.custom_tags
    assert no_instance.common_properties.response_flags.no_healthy_upstream


def _last_updated(gateway: Gateway) -> dict[str, str]:
    with urllib.request.urlopen(f"http://{gateway.admin}/config_dump?resource=dynamic_active_clusters") as r:
        dump = json.loads(r.read())
    return {c["cluster"]["name"]: c["last_updated"] for c in dump["configs"]}


def test_control_plane_restart_keeps_routing(gateway: Gateway, http: httpx.Client) -> None:
    """Last: it replaces the control plane. Envoy keeps routing on its last config while the
    registry is down; the restarted one, loaded with the same state before it answers, resends
    nothing (content-hash versions), and its next change applies at once."""
    before = _last_updated(gateway)
    assert "echo.localhost" in before
    gateway.loop.run(gateway.server.stop(0))
    outage = time.perf_counter()
    failures = 0
    requests = 0
    while time.perf_counter() - outage < 1:
        requests += 1
        failures += invoke(http, "echo").status_code != 200
    table = RoutingTable("localhost")
    table.load(gateway.table.routes())
    table.mark_ready()
    gateway.server, _ = gateway.loop.run(  # type: ignore[misc]
        _serve(table, f"127.0.0.1:{gateway.control_plane_port}")
    )
    gateway.table = table
    reconnect_ms = gateway.wait_acked(table.generation) * 1000
    print(
        f"\ncontrol plane down 1 s: {failures}/{requests} failed;"
        f" reconnected and in sync {reconnect_ms:.0f} ms"
    )
    assert failures == 0
    assert _last_updated(gateway) == before  # nothing was resent
    generation = table.set_instances(COLD_ID, [gateway.upstreams["b"].endpoint("cold-b")])
    gateway.wait_acked(generation)
    assert invoke(http, "cold").json()["instance"] == "b"
