"""The metrics service's gRPC servicer.

RPCs it does not implement yet fall through to the generated base class and answer UNIMPLEMENTED
(REST 501) naming the method; never a made-up success.
"""

from __future__ import annotations

from chutes.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from services.kit.server import ServiceContext, ServiceSpec


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context


SPEC = ServiceSpec(
    name="metrics",
    grpc_service=metrics_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
    add_to_server=metrics_pb2_grpc.add_MetricsServiceServicer_to_server,
    make_servicer=MetricsServicer,
)
