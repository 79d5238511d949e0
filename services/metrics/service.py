"""The metrics service's gRPC servicer: the public MetricsService (utilization, GPU count history,
miner means) and MetricsInternalService (utilization for the registry's scheduler), over the
invocation records the gateway's access log feeds (records.py), the capacity log (capacity.py)
and the miner means (means.py); chutes, instances and scheduling decisions come from the
registry (RegistryInternalService).
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from google.api import httpbody_pb2

from chutes.metrics.v1 import internal_pb2 as metrics_internal_pb2
from chutes.metrics.v1 import internal_pb2_grpc as metrics_internal_pb2_grpc
from chutes.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
from services.kit.channels import channel_at
from services.kit.db import Database
from services.kit.errors import InvalidArgument, NotFound, Unavailable
from services.kit.requests import Context
from services.kit.server import Closable, GrpcService, ServiceContext, ServiceSpec
from services.kit.settings import Settings
from services.metrics import means, store, views
from services.metrics.capacity import Capacity
from services.metrics.means import MinerMeans
from services.metrics.records import Records

#: How long the registry may take to answer before the caller gets 503.
REGISTRY_SECONDS = 5.0


def _registry_unavailable() -> NoReturn:
    raise Unavailable("The registry cannot be asked right now; try again shortly") from None


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.settings = context.settings
        self.registry = internal_pb2_grpc.RegistryInternalServiceStub(
            channel_at(context.settings.address_of("registry"))
        )
        #: The gateway's access log of chute calls, written as invocation records, and what is
        #: computed from them (None without a database: the contract tests' suite).
        self.records = Records(context.db, self.registry) if context.db is not None else None
        self.capacity = (
            Capacity(context.db, self.registry, context.settings.capacity_log_seconds)
            if context.db is not None
            else None
        )
        self.means = (
            MinerMeans(context.db, self.registry, context.settings.miner_means_seconds)
            if context.db is not None
            else None
        )
        self.internal = MetricsInternalServicer(self)

    @property
    def db(self) -> Database:
        if self.context.db is None:
            raise Unavailable("The metrics service runs without a database")
        return self.context.db

    async def _fleet(self, request: internal_pb2.ListFleetRequest) -> internal_pb2.ListFleetResponse:
        try:
            fleet: internal_pb2.ListFleetResponse = await self.registry.ListFleet(
                request, timeout=REGISTRY_SECONDS
            )
        except grpc.aio.AioRpcError:
            _registry_unavailable()
        return fleet

    async def GetChuteUtilization(
        self, request: metrics_pb2.GetChuteUtilizationRequest, context: Context
    ) -> metrics_pb2.GetChuteUtilizationResponse:
        async with self.db.raw() as connection:
            rows = await store.latest_capacity(connection)
        if not rows:
            return metrics_pb2.GetChuteUtilizationResponse()
        fleet = await self._fleet(internal_pb2.ListFleetRequest(chute_ids=[r["chute_id"] for r in rows]))
        # Deleted chutes keep their log rows but are not listed (the real API joins chutes).
        chutes = {chute.chute_id: chute for chute in fleet.chutes}
        return metrics_pb2.GetChuteUtilizationResponse(
            items=[
                views.utilization_message(r, chutes[r["chute_id"]]) for r in rows if r["chute_id"] in chutes
            ]
        )

    async def GetGpuCountHistory(
        self, request: metrics_pb2.GetGpuCountHistoryRequest, context: Context
    ) -> metrics_pb2.GetGpuCountHistoryResponse:
        """The registry keeps the chute history; this is its public face (the real API's route
        belongs with the metrics)."""
        try:
            counts = await self.registry.ListGpuCounts(
                internal_pb2.ListGpuCountsRequest(), timeout=REGISTRY_SECONDS
            )
        except grpc.aio.AioRpcError:
            _registry_unavailable()
        return metrics_pb2.GetGpuCountHistoryResponse(
            items=[metrics_pb2.GpuCount(chute_id=c.chute_id, gpu_count=c.gpu_count) for c in counts.items]
        )

    async def GetMinerMeanIndex(
        self, request: metrics_pb2.GetMinerMeanIndexRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        fleet = await self._fleet(internal_pb2.ListFleetRequest(standard_template="vllm"))
        return httpbody_pb2.HttpBody(
            content_type="text/html; charset=utf-8", data=means.index_html(self._base_url, fleet.chutes)
        )

    async def GetMinerMeans(
        self, request: metrics_pb2.GetMinerMeansRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        chute_id, extension = means.split_extension(request.chute_id)
        if extension is not None and extension not in means.FORMATS:
            raise InvalidArgument(f"Unknown format {extension!r}: use .json, .csv, .html or no extension")
        fleet = await self._fleet(internal_pb2.ListFleetRequest(chute_ids=[chute_id]))
        if not fleet.chutes:
            raise NotFound("Chute not found")
        async with self.db.raw() as connection:
            rows = await store.miner_means(connection, chute_id)
        if extension == "json":
            return httpbody_pb2.HttpBody(content_type="application/json", data=means.means_json(rows))
        if extension == "csv":
            return httpbody_pb2.HttpBody(content_type="text/csv; charset=utf-8", data=means.means_csv(rows))
        return httpbody_pb2.HttpBody(
            content_type="text/html; charset=utf-8", data=means.means_html(chute_id, rows)
        )

    @property
    def _base_url(self) -> str:
        """Where clients reach the gateway (the index links to each chute's page there)."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = self.settings.gateway_host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.settings.gateway_port}"


class MetricsInternalServicer(metrics_internal_pb2_grpc.MetricsInternalServiceServicer):
    def __init__(self, metrics: MetricsServicer) -> None:
        self.metrics = metrics

    async def ListUtilization(
        self, request: metrics_internal_pb2.ListUtilizationRequest, context: Context
    ) -> metrics_internal_pb2.ListUtilizationResponse:
        capacity = self.metrics.capacity
        if capacity is None or capacity.computed_at is None:
            # Not computed yet (just started): no chute is known to be busy.
            return metrics_internal_pb2.ListUtilizationResponse()
        return metrics_internal_pb2.ListUtilizationResponse(
            items=capacity.latest, computed_at_ms=int(capacity.computed_at.timestamp() * 1000)
        )


async def _run_beside(servicer: object, settings: Settings) -> list[Closable]:
    """Compute utilization and the capacity log, and rebuild the miner means, on their schedules."""
    assert isinstance(servicer, MetricsServicer)
    running: list[Closable] = []
    for part in (servicer.capacity, servicer.means):
        if part is not None:
            part.start()
            running.append(part)
    return running


SPEC = ServiceSpec(
    name="metrics",
    grpc_services=(
        GrpcService.of(metrics_pb2, metrics_pb2_grpc, "MetricsService"),
        # For the suite's services only (the gateway never routes *InternalService).
        GrpcService.of(metrics_internal_pb2, metrics_internal_pb2_grpc, "MetricsInternalService").serving(
            lambda s: s.internal
        ),
        # Envoy's access-log service: internal (the gateway routes only chutes.*).
        GrpcService(
            "envoy.service.accesslog.v3.AccessLogService",
            lambda servicer, server: als_pb2_grpc.add_AccessLogServiceServicer_to_server(
                servicer.records or als_pb2_grpc.AccessLogServiceServicer(), server
            ),
        ),
    ),
    make_servicer=MetricsServicer,
    start_side_servers=_run_beside,
)
