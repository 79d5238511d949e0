"""The registry service's gRPC servicer.

RPCs it does not implement yet fall through to the generated base class and answer UNIMPLEMENTED
(REST 501) naming the method; never a made-up success.
"""

from __future__ import annotations

from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
from services.kit.server import GrpcService, ServiceContext, ServiceSpec


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context


SPEC = ServiceSpec(
    name="registry",
    grpc_services=(GrpcService.of(registry_pb2, registry_pb2_grpc, "RegistryService"),),
    make_servicer=RegistryServicer,
)
