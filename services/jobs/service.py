"""The jobs service's gRPC servicer.

RPCs it does not implement yet fall through to the generated base class and answer UNIMPLEMENTED
(REST 501) naming the method; never a made-up success.
"""

from __future__ import annotations

from chutes.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from services.kit.server import GrpcService, ServiceContext, ServiceSpec


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context


SPEC = ServiceSpec(
    name="jobs",
    grpc_services=(GrpcService.of(jobs_pb2, jobs_pb2_grpc, "JobsService"),),
    make_servicer=JobsServicer,
)
