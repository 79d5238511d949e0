"""The attestation service's gRPC servicer.

RPCs it does not implement yet fall through to the generated base class and answer UNIMPLEMENTED
(REST 501) naming the method; never a made-up success.
"""

from __future__ import annotations

from chutes.attestation.v1 import attestation_pb2, attestation_pb2_grpc
from services.kit.server import GrpcService, ServiceContext, ServiceSpec


class AttestationServicer(attestation_pb2_grpc.AttestationServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context


SPEC = ServiceSpec(
    name="attestation",
    grpc_services=(GrpcService.of(attestation_pb2, attestation_pb2_grpc, "AttestationService"),),
    make_servicer=AttestationServicer,
)
