"""The metrics service's gRPC servicer.

RPCs it does not implement yet fall through to the generated base class and answer UNIMPLEMENTED
(REST 501) naming the method; never a made-up success.
"""

from __future__ import annotations

from chutes.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from services.kit.server import GrpcService, ServiceContext, ServiceSpec


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context


SPEC = ServiceSpec(
    name="metrics",
    grpc_services=(GrpcService.of(metrics_pb2, metrics_pb2_grpc, "MetricsService"),),
    make_servicer=MetricsServicer,
)
