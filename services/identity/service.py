"""The identity service's gRPC servicer.

RPCs it does not implement yet fall through to the generated base class and answer UNIMPLEMENTED
(REST 501) naming the method; never a made-up success.
"""

from __future__ import annotations

from chutes.identity.v1 import identity_pb2, identity_pb2_grpc
from services.kit.server import ServiceContext, ServiceSpec


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context


SPEC = ServiceSpec(
    name="identity",
    grpc_service=identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
    add_to_server=identity_pb2_grpc.add_IdentityServiceServicer_to_server,
    make_servicer=IdentityServicer,
)
