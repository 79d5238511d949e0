"""The metrics service's gRPC servicer.

RPCs it does not implement yet fall through to the generated base class and answer UNIMPLEMENTED
(REST 501) naming the method; never a made-up success.
"""

from __future__ import annotations

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc

from chutes.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
from services.kit.channels import channel_at
from services.kit.errors import Unavailable
from services.kit.requests import Context
from services.kit.server import GrpcService, ServiceContext, ServiceSpec
from services.metrics.records import Records

#: How long the registry may take to answer before the caller gets 503.
REGISTRY_SECONDS = 5.0


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.registry = internal_pb2_grpc.RegistryInternalServiceStub(
            channel_at(context.settings.address_of("registry"))
        )
        #: The gateway's access log of chute calls, written as invocation records (None without
        #: a database: the contract tests' suite).
        self.records = Records(context.db, self.registry) if context.db is not None else None

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
            raise Unavailable("The registry cannot be asked right now; try again shortly") from None
        return metrics_pb2.GetGpuCountHistoryResponse(
            items=[metrics_pb2.GpuCount(chute_id=c.chute_id, gpu_count=c.gpu_count) for c in counts.items]
        )


SPEC = ServiceSpec(
    name="metrics",
    grpc_services=(
        GrpcService.of(metrics_pb2, metrics_pb2_grpc, "MetricsService"),
        # Envoy's access-log service: internal (the gateway routes only chutes.*).
        GrpcService(
            "envoy.service.accesslog.v3.AccessLogService",
            lambda servicer, server: als_pb2_grpc.add_AccessLogServiceServicer_to_server(
                servicer.records or als_pb2_grpc.AccessLogServiceServicer(), server
            ),
        ),
    ),
    make_servicer=MetricsServicer,
)
