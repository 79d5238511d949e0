"""Test servicers that echo what the gateway delivered, for the gateway's own tests.

They run in one in-process grpc.aio server with the kit's real interceptor, so error mapping is
the production code; only the handlers are test doubles. Each handler reflects its input into
its output so a test can see exactly what the transcoder made of a REST request.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import timestamp_pb2

from chutes.attestation.v1 import attestation_pb2_grpc
from chutes.identity.v1 import identity_pb2_grpc
from chutes.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from chutes.metrics.v1 import metrics_pb2_grpc
from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
from services.kit.errors import FieldViolation, NotFound, PaymentRequired, ValidationFailed
from services.kit.headers import USER_ID_HEADER
from services.kit.interceptors import RequestInterceptor
from services.kit.server import MAX_REQUEST_MESSAGE_BYTES
from services.registry.views import json_body

Context = grpc.aio.ServicerContext[Any, Any]

#: A message with quotes, backslashes, a newline and non-ASCII text, to check escaping end to end.
TRICKY_DETAIL = 'Did not find "cli/échø" \\ here\nsecond line'


def _metadata(context: Context, key: str) -> str:
    return ",".join(str(v) for k, v in context.invocation_metadata() or () if k == key)


class EchoRegistry(registry_pb2_grpc.RegistryServiceServicer):
    async def ListChutes(self, request: registry_pb2.ListChutesRequest, context: Context) -> Any:
        echo = registry_pb2.Chute(
            chute_id="echo",
            name=request.name if request.HasField("name") else "",
            public=request.include_public,
            tagline=_metadata(context, USER_ID_HEADER),
            readme=_metadata(context, "x-chutes-userid"),
        )
        limit = request.limit if request.HasField("limit") else 25
        return registry_pb2.ListChutesResponse(total=1, page=request.page, limit=limit, items=[echo])

    async def GetChute(self, request: registry_pb2.GetChuteRequest, context: Context) -> Any:
        created = timestamp_pb2.Timestamp(seconds=1_700_000_000)
        return registry_pb2.Chute(chute_id=request.chute_id_or_name, created_at=created)

    # REST reaches chutes through the JSON twins of GetChute and ListChutes (the registry prints
    # the typed answer itself): the same echo, printed the registry's way.
    async def GetChuteJson(self, request: registry_pb2.GetChuteRequest, context: Context) -> Any:
        return json_body(await self.GetChute(request, context))

    async def ListChutesJson(self, request: registry_pb2.ListChutesRequest, context: Context) -> Any:
        return json_body(await self.ListChutes(request, context))

    async def GetImage(self, request: registry_pb2.GetImageRequest, context: Context) -> Any:
        return registry_pb2.Image(image_id=request.image_id_or_name)

    async def ListBoostedChutes(self, request: Any, context: Context) -> Any:
        return registry_pb2.ListBoostedChutesResponse(
            items=[registry_pb2.BoostedChute(chute_id="c1", name="one", boost=1.5)]
        )

    async def ListRollingUpdates(self, request: Any, context: Context) -> Any:
        return registry_pb2.ListRollingUpdatesResponse()

    async def DeployChute(self, request: registry_pb2.DeployChuteRequest, context: Context) -> Any:
        if request.chute.name == "invalid":
            raise ValidationFailed(
                [
                    FieldViolation(
                        ("body", "name"), "String should have at least 3 characters", "string_too_short"
                    )
                ]
            )
        if request.chute.name == "crash":
            raise RuntimeError("a bug with a secret in it")
        if not request.accept_fee:
            raise PaymentRequired("DEPLOYMENT FEE NOTICE: re-run with --accept-fee")
        return registry_pb2.Chute(
            name=request.chute.name,
            public=request.chute.public,
            node_selector=request.chute.node_selector,
            cords=request.chute.cords,
        )

    async def ShareChute(self, request: Any, context: Context) -> Any:
        raise NotFound(TRICKY_DETAIL)

    async def GetChuteCode(self, request: registry_pb2.GetChuteCodeRequest, context: Context) -> Any:
        return httpbody_pb2.HttpBody(content_type="text/plain", data=f"# {request.chute_id}\n".encode())

    async def WarmupChute(self, request: registry_pb2.WarmupChuteRequest, context: Context) -> Any:
        for status in ("cold", "cold", "hot"):
            frame = f'data: {{"status": "{status}", "log": "{request.chute_id_or_name}"}}\n\n'
            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=frame.encode())
            await asyncio.sleep(0.05)


class EchoJobs(jobs_pb2_grpc.JobsServiceServicer):
    async def UploadJobFile(self, request_iterator: AsyncIterator[Any], context: Context) -> Any:
        digest, size, job_id, messages = hashlib.sha256(), 0, "", 0
        async for message in request_iterator:
            messages += 1
            job_id = job_id or message.job_id
            digest.update(message.file.data)
            size += len(message.file.data)
        return jobs_pb2.UploadJobFileResponse(
            status="success",
            filename=digest.hexdigest(),
            path=str(size),
            file_id=job_id,
            uploaded=messages > 0,
        )

    async def DownloadJobFile(self, request: jobs_pb2.DownloadJobFileRequest, context: Context) -> Any:
        remaining = int(request.file_id)
        chunk = b"x" * (1 << 20)
        first = True
        while remaining > 0:
            piece = chunk[: min(remaining, len(chunk))]
            remaining -= len(piece)
            yield httpbody_pb2.HttpBody(content_type="application/octet-stream" if first else "", data=piece)
            first = False


async def start_echo_server() -> tuple[grpc.aio.Server, int]:
    """All five services on one port: the echo ones above, the others as generated (UNIMPLEMENTED)."""
    server = grpc.aio.server(
        interceptors=[RequestInterceptor()],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", MAX_REQUEST_MESSAGE_BYTES)],
    )
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(EchoRegistry(), server)
    jobs_pb2_grpc.add_JobsServiceServicer_to_server(EchoJobs(), server)
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(
        identity_pb2_grpc.IdentityServiceServicer(), server
    )
    attestation_pb2_grpc.add_AttestationServiceServicer_to_server(
        attestation_pb2_grpc.AttestationServiceServicer(), server
    )
    metrics_pb2_grpc.add_MetricsServiceServicer_to_server(metrics_pb2_grpc.MetricsServiceServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
