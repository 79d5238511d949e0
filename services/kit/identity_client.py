"""The identity service as other services ask it: a CallerLookup over gRPC."""

from __future__ import annotations

import grpc

from chutes.identity.v1 import identity_pb2, identity_pb2_grpc
from services.kit.caller import Caller, MalformedCredential, caller_from_proto
from services.kit.errors import DomainError, Unauthenticated, Unavailable


class IdentityClient:
    """CallerLookup over gRPC, for every service but identity itself."""

    TIMEOUT_SECONDS = 2.0

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = identity_pb2_grpc.IdentityInternalServiceStub(channel)

    async def by_api_key(self, authorization: str) -> Caller:
        request = identity_pb2.AuthenticateApiKeyRequest(authorization=authorization)
        try:
            return caller_from_proto(
                await self.stub.AuthenticateApiKey(request, timeout=self.TIMEOUT_SECONDS)
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None

    async def find_user(self, user_id_or_name: str) -> Caller | None:
        """A user by id or name (share targets); None when there is none."""
        request = identity_pb2.FindUserRequest(user_id_or_name=user_id_or_name)
        try:
            return caller_from_proto(await self.stub.FindUser(request, timeout=self.TIMEOUT_SECONDS))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _refusal(error) from None

    async def by_user_id(self, user_id: str) -> Caller:
        request = identity_pb2.GetCallerRequest(user_id=user_id)
        try:
            return caller_from_proto(await self.stub.GetCaller(request, timeout=self.TIMEOUT_SECONDS))
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None


def _refusal(error: grpc.aio.AioRpcError) -> DomainError:
    code = error.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return MalformedCredential(error.details() or "Missing or invalid authorization header(s)")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
        return Unauthenticated(error.details() or "Invalid token or user not found")
    return Unavailable("Identity service unavailable, try again shortly")
