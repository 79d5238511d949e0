"""The service kit in process: graceful stop, health, reflection, request ids, error details."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
from services.kit.errors import ValidationFailed
from services.kit.logs import request_id
from services.kit.server import ServiceContext, ServiceSpec, start_service
from services.kit.settings import Settings
from services.registry.service import SPEC as REGISTRY

log = logging.getLogger("tests.kit")


class SlowRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """GetChute takes a while and logs under the caller's request id."""

    def __init__(self, context: ServiceContext) -> None:
        self.started = asyncio.Event()
        self.seen_request_ids: list[str] = []

    async def GetChute(self, request: Any, context: Any) -> Any:
        self.seen_request_ids.append(request_id.get())
        self.started.set()
        await asyncio.sleep(0.5)
        return registry_pb2.Chute(chute_id=request.chute_id_or_name)

    async def DeleteChute(self, request: Any, context: Any) -> Any:
        raise ValidationFailed([])


def slow_spec() -> tuple[ServiceSpec, list[SlowRegistry]]:
    made: list[SlowRegistry] = []

    def make(context: ServiceContext) -> SlowRegistry:
        made.append(SlowRegistry(context))
        return made[-1]

    # Only the RegistryService face: this servicer is not the gateway's control plane.
    return ServiceSpec(REGISTRY.name, REGISTRY.grpc_services[:1], make), made


def test_graceful_stop_finishes_in_flight_calls_and_refuses_new_ones() -> None:
    asyncio.run(graceful_stop())


def test_reflection_lists_the_service_and_errors_carry_details() -> None:
    asyncio.run(reflection_and_details())


async def graceful_stop() -> None:
    spec, made = slow_spec()
    running = await start_service(spec, Settings(database_url=None), "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=spec.grpc_service))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        in_flight = asyncio.ensure_future(
            stub.GetChute(
                registry_pb2.GetChuteRequest(chute_id_or_name="slow"), metadata=(("x-request-id", "r-1"),)
            )
        )
        await made[0].started.wait()
        stopping = asyncio.ensure_future(running.stop(grace=5))
        # Health turns NOT_SERVING first, while the slow call is still running.
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not in_flight.done()
        watch.cancel()  # an open watch would itself hold the server for the whole grace period
        reply = await in_flight  # the call that was running when the stop began still succeeds
        assert reply.chute_id == "slow"
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetChute(registry_pb2.GetChuteRequest(chute_id_or_name="late"), timeout=2)
        assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert made[0].seen_request_ids == ["r-1"]  # Envoy's x-request-id is the one logs carry


async def reflection_and_details() -> None:
    spec, _ = slow_spec()
    running = await start_service(spec, Settings(database_url=None), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def ask() -> Any:
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            async for answer in reflection.ServerReflectionInfo(ask()):
                names = {s.name for s in answer.list_services_response.service}
            assert {spec.grpc_service, "grpc.health.v1.Health"} <= names

            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await stub.DeleteChute(registry_pb2.DeleteChuteRequest(chute_id="x"))
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            trailers = dict(invalid.value.trailing_metadata() or ())
            assert trailers["x-http-status"] == "422"
            assert "grpc-status-details-bin" in trailers
    finally:
        await running.stop(grace=0)


def test_raw_connections_are_kept_after_errors_and_dropped_after_interruptions(database_url: str) -> None:
    """A pooled connection goes on serving after a statement the server refused (no reconnect
    per failed request), but one whose statement was cancelled midway is closed, never handed to
    the next request in an unknown protocol state."""
    import asyncpg

    from services.kit.db import Database

    async def scenario() -> None:
        db = Database(database_url, "public", raw_pool_size=1)
        try:
            async with db.raw() as connection:
                first = connection.get_server_pid()
            with pytest.raises(asyncpg.DivisionByZeroError):
                async with db.raw() as connection:
                    await connection.fetchval("SELECT 1 / 0")
            async with db.raw() as connection:
                assert connection.get_server_pid() == first

            async def sleep_in_the_database() -> None:
                async with db.raw() as connection:
                    await connection.execute("SELECT pg_sleep(30)")

            sleeping = asyncio.ensure_future(sleep_in_the_database())
            await asyncio.sleep(0.3)
            sleeping.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sleeping
            async with db.raw() as connection:
                assert connection.get_server_pid() != first
                assert await connection.fetchval("SELECT 41 + 1") == 42
        finally:
            await db.close()

    asyncio.run(scenario())
