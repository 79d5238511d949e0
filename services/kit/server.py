"""The grpc.aio server every service runs: one servicer, health, reflection, graceful stop, and
(when its `CHUTES_<SERVICE>_PROMETHEUS_ADDRESS` is set) `GET /metrics` (services/kit/prometheus.py).

A service describes itself with a `ServiceSpec`; `run(spec)` is its whole `__main__`. On SIGTERM
(or SIGINT) health turns NOT_SERVING first, so load balancers stop sending new calls, then the
server stops accepting calls and gives in-flight ones `shutdown_grace_seconds` to finish.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.kit.auth import Authenticator
from services.kit.caller import CallerLookup
from services.kit.channels import channel_at, close_channels
from services.kit.db import Database
from services.kit.identity_client import IdentityClient
from services.kit.interceptors import RequestInterceptor
from services.kit.logs import configure_logging
from services.kit.prometheus import serve_metrics
from services.kit.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Largest request message a service accepts (gRPC's default is 4 MiB). The gateway admits REST
#: JSON bodies up to half of it, so every body it lets through fits once transcoded.
MAX_REQUEST_MESSAGE_BYTES = 16 * 1024 * 1024
#: Largest request metadata a service accepts.
MAX_METADATA_BYTES = 64 * 1024


class Closable(Protocol):
    """Something a service runs beside its gRPC server (an asyncio.Server, a background task)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServiceContext:
    """What a servicer is built from."""

    settings: Settings
    #: The service's own schema; None when the suite runs without a database (contract tests).
    db: Database | None


@dataclass(frozen=True)
class GrpcService:
    """One gRPC service a servicer implements."""

    #: Fully qualified name, e.g. `chutes.registry.v1.RegistryService`.
    full_name: str
    #: The generated `add_<X>Servicer_to_server` function.
    add_to_server: Callable[[Any, grpc.aio.Server], None]

    @classmethod
    def of(cls, messages: ModuleType, stubs: ModuleType, name: str) -> GrpcService:
        """From the generated modules: `GrpcService.of(jobs_pb2, jobs_pb2_grpc, "JobsService")`."""
        full_name = messages.DESCRIPTOR.services_by_name[name].full_name
        return cls(full_name, getattr(stubs, f"add_{name}Servicer_to_server"))

    def serving(self, part: Callable[[Any], object]) -> GrpcService:
        """The same service, implemented by a part of the servicer (`lambda s: s.miners`)."""
        add = self.add_to_server
        return GrpcService(self.full_name, lambda servicer, server: add(part(servicer), server))


@dataclass(frozen=True)
class ServiceSpec:
    """How to serve one service: its name, its gRPC services and how to build its servicer."""

    #: Short name: `registry`; also its database schema and its settings prefix.
    name: str
    #: The gRPC services the servicer implements; the first is the service's public face.
    grpc_services: tuple[GrpcService, ...]
    make_servicer: Callable[[ServiceContext], object]
    #: True when the servicer itself answers caller lookups (identity); others ask identity.
    answers_caller_lookups: bool = False
    #: What the service runs beside its gRPC server (identity's signature check for Envoy, the
    #: registry's route follower); started before the service reports SERVING, closed when it stops.
    start_side_servers: Callable[[object, Settings], Awaitable[list[Closable]]] | None = None

    @property
    def grpc_service(self) -> str:
        return self.grpc_services[0].full_name


@dataclass
class RunningService:
    server: grpc.aio.Server
    health: HealthServicer
    port: int
    context: ServiceContext
    servicer: object
    side_servers: list[Closable]
    #: Where `GET /metrics` answers; None when the service serves none.
    metrics_port: int | None = None

    async def stop(self, grace: float) -> None:
        """Health NOT_SERVING, then stop accepting calls and let in-flight ones finish."""
        await self.health.enter_graceful_shutdown()
        for side in self.side_servers:
            side.close()
        await self.server.stop(grace)
        if self.context.db is not None:
            await self.context.db.close()
        await close_channels()


async def start_service(spec: ServiceSpec, settings: Settings, listen: str) -> RunningService:
    """Start serving `spec` on `listen` (`host:port`, port 0 picks one) and return at once."""
    db = Database(settings.database_url, spec.name) if settings.database_url else None
    context = ServiceContext(settings=settings, db=db)
    servicer = spec.make_servicer(context)
    lookup: CallerLookup = (
        servicer  # type: ignore[assignment]
        if spec.answers_caller_lookups
        else IdentityClient(channel_at(settings.address_of("identity")))
    )
    server = grpc.aio.server(
        interceptors=[RequestInterceptor(Authenticator(lookup))],
        # so_reuseport=0: a second process on the same port fails instead of silently sharing it.
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_REQUEST_MESSAGE_BYTES),
            # Far above what the gateway forwards (gateway/render.py MAX_REQUEST_HEADERS_KB plus
            # its own headers): gRPC's default refuses heads over 8 KiB, at random up to 16 KiB.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            # No HTTP/2 window growth: a client stream (a job file upload) is held in the
            # service's memory only as far as the default window lets Envoy run ahead.
            ("grpc.http2.bdp_probe", 0),
        ],
    )
    for service in spec.grpc_services:
        service.add_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [service.full_name for service in spec.grpc_services]
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((*names, health_name, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"{spec.name}: cannot listen on {listen}")
    await server.start()
    side_servers = await spec.start_side_servers(servicer, settings) if spec.start_side_servers else []
    metrics_port = None
    if metrics_address := settings.prometheus_address_of(spec.name):
        host, _, metrics_listen = metrics_address.rpartition(":")
        metrics = await serve_metrics(settings.bind_host or host, int(metrics_listen))
        metrics_port = int(metrics.sockets[0].getsockname()[1])
        side_servers.append(metrics)
    for name in ("", *names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningService(server, health, port, context, servicer, side_servers, metrics_port)


async def serve(spec: ServiceSpec, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    listen = settings.listen_address_of(spec.name)
    running = await start_service(spec, settings, listen)
    # What exists now (modules, descriptors, the servicer: ~120,000 objects) lives as long as the
    # process: out of the garbage collector's sight, each full collection no longer walks it. One
    # took ~140 ms of a stalled event loop on this machine, a p99 every read paid (issue 14).
    gc.freeze()
    log.info("%s serving %s on %s", spec.name, spec.grpc_service, listen)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("%s stopping: finishing in-flight calls (up to %ss)", spec.name, settings.shutdown_grace_seconds)
    await running.stop(settings.shutdown_grace_seconds)
    log.info("%s stopped", spec.name)


def run(spec: ServiceSpec) -> None:
    """The `__main__` of a service process."""
    settings = get_settings()
    configure_logging(spec.name, settings.log_level)
    # uvloop: ~10% less CPU per gRPC call than asyncio's default loop (measured, bench/README.md).
    uvloop.run(serve(spec, settings))
