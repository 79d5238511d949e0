"""Prometheus: each service's `GET /metrics` counts its calls (services/kit/prometheus.py), in
process and through `chutes-suite up`, which prints where every service and Envoy are scraped."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import httpx
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
from services.kit.errors import NotFound
from services.kit.server import ServiceContext, ServiceSpec, start_service
from services.kit.settings import SERVICE_NAMES, Settings
from services.registry.service import SPEC as REGISTRY
from tests.conftest import RunningSuite

REGISTRY_SERVICE = "chutes.registry.v1.RegistryService"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
UUID = "0d3f1c2e-5b6a-4c7d-8e9f-0a1b2c3d4e5f"


class Registry(registry_pb2_grpc.RegistryServiceServicer):
    """GetChute finds only `known`."""

    def __init__(self, context: ServiceContext) -> None:
        pass

    async def GetChute(self, request: Any, context: Any) -> Any:
        if request.chute_id_or_name != "known":
            raise NotFound("Chute not found")
        return registry_pb2.Chute(chute_id="known")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def calls(text: str, service: str, method: str, code: str | None = None) -> float:
    """`chutes_rpc_calls_total` of a method (for one code, or summed over codes)."""
    return sum(
        value
        for (name, labels), value in samples(text).items()
        if name == "chutes_rpc_calls_total"
        and ("service", service) in labels
        and ("method", method) in labels
        and (code is None or ("code", code) in labels)
    )


def test_metrics_count_calls_by_method_and_code_with_latency() -> None:
    asyncio.run(in_process())


async def in_process() -> None:
    spec = ServiceSpec(REGISTRY.name, REGISTRY.grpc_services[:1], Registry)
    settings = Settings(database_url=None, registry_prometheus_address="127.0.0.1:0")
    running = await start_service(spec, settings, "127.0.0.1:0")
    assert running.metrics_port is not None
    url = f"http://127.0.0.1:{running.metrics_port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            before = (await http.get(url)).text
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = registry_pb2_grpc.RegistryServiceStub(channel)
                await stub.GetChute(registry_pb2.GetChuteRequest(chute_id_or_name="known"))
                for _ in range(2):
                    try:
                        await stub.GetChute(registry_pb2.GetChuteRequest(chute_id_or_name="missing"))
                    except grpc.aio.AioRpcError as error:
                        assert error.code() == grpc.StatusCode.NOT_FOUND
                # A streaming call (bidirectional): counted when its stream ends.
                reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

                async def ask() -> Any:
                    yield reflection_pb2.ServerReflectionRequest(list_services="")

                async for _ in reflection.ServerReflectionInfo(ask()):
                    pass

            reply = await http.get(url)
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/plain; version=")
            after = reply.text
            for code, made in (("OK", 1), ("NOT_FOUND", 2)):
                delta = calls(after, REGISTRY_SERVICE, "GetChute", code) - calls(
                    before, REGISTRY_SERVICE, "GetChute", code
                )
                assert delta == made, (code, delta)
            assert calls(after, REFLECTION, "ServerReflectionInfo", "OK") >= 1

            latency = samples(after)
            count = (
                "chutes_rpc_duration_seconds_count",
                frozenset({("service", REGISTRY_SERVICE), ("method", "GetChute")}),
            )
            previous = samples(before).get(count, 0.0)
            assert latency[count] - previous == 3
            buckets = [
                labels
                for (name, labels) in latency
                if name == "chutes_rpc_duration_seconds_bucket" and ("method", "GetChute") in labels
            ]
            bounds = {dict(labels)["le"] for labels in buckets}
            assert {"0.0005", "10.0", "+Inf"} <= bounds

            assert (await http.get(f"http://127.0.0.1:{running.metrics_port}/other")).status_code == 404
    finally:
        await running.stop(grace=0)


def test_a_service_without_a_metrics_address_serves_none() -> None:
    async def check() -> None:
        spec = ServiceSpec(REGISTRY.name, REGISTRY.grpc_services[:1], Registry)
        running = await start_service(spec, Settings(database_url=None), "127.0.0.1:0")
        try:
            assert running.metrics_port is None
        finally:
            await running.stop(grace=0)

    asyncio.run(check())


# ---- through `chutes-suite up` ----------------------------------------------------------------

_printed: dict[int, str] = {}


def metrics_line(suite: RunningSuite) -> str:
    """The line `up` prints with the gateway line, right after it (read once, kept per suite)."""
    if suite.process.pid not in _printed:
        stdout = suite.process.stdout
        assert stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(10)
        assert line, "up printed no line after the gateway line"
        _printed[suite.process.pid] = line[0].strip()
    return _printed[suite.process.pid]


# A call through the gateway that each service answers (whatever it answers), and its RPC.
CALLS_THROUGH_THE_GATEWAY = {
    "identity": ("/ping", "chutes.identity.v1.IdentityService", "Ping"),
    # By name: an anonymous GET by id is answered outside gRPC (services/registry/anonymous_reads.py).
    "registry": ("/chutes/org/model", REGISTRY_SERVICE, "GetChuteJson"),
    "jobs": (f"/jobs/{UUID}", "chutes.jobs.v1.JobsService", "GetJob"),
    "attestation": (
        f"/chutes/{UUID}/evidence?nonce=" + "ab" * 32,
        "chutes.attestation.v1.AttestationService",
        "GetTeeChuteEvidence",
    ),
    "metrics": ("/chutes/utilization", "chutes.metrics.v1.MetricsService", "GetChuteUtilization"),
}


def test_up_prints_where_each_service_and_envoy_are_scraped(suite: RunningSuite) -> None:
    line = metrics_line(suite)
    assert line.startswith("metrics: "), line
    targets = dict(target.split("=", 1) for target in line.removeprefix("metrics: ").split())
    assert set(targets) == {*SERVICE_NAMES, "envoy"}
    with httpx.Client(timeout=10) as http:
        for name in SERVICE_NAMES:
            url = targets[name]
            assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
            path, service, method = CALLS_THROUGH_THE_GATEWAY[name]
            before = http.get(url)
            assert before.status_code == 200, name
            answered = http.get(f"{suite.gateway}{path}")
            assert answered.json() not in ({"detail": "Not Found"}, {"detail": "Service Unavailable"})
            after = http.get(url).text
            assert "chutes_rpc_calls_total" in after
            assert calls(after, service, method) - calls(before.text, service, method) == 1, name

        envoy = http.get(targets["envoy"])
        assert targets["envoy"].endswith("/stats/prometheus")
        assert envoy.status_code == 200
        assert "envoy_cluster_upstream_rq" in envoy.text
