"""The identity service: users, API keys, and the verification of hotkey signatures.

One servicer implements two gRPC services and the gateway's signature check:
- IdentityService: the REST face (register, /users/me, /api_keys);
- IdentityInternalService: caller lookups for the other services (API keys, verified user ids);
- `verdict()`: Envoy's ext_authz check of hotkey-signed requests, served over plain HTTP on its
  own internal port (services/kit/authz_http.py says why).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from chutes.identity.v1 import identity_pb2, identity_pb2_grpc
from services.identity import keys, store, views
from services.identity.signatures import REPLAYED, SignatureRejected, SignatureVerifier, SignedRequest, Use
from services.kit import authz_http
from services.kit.auth import require_caller
from services.kit.authz_http import AuthzRequest, Verdict
from services.kit.caller import Caller, MalformedCredential, Scope, caller_to_proto
from services.kit.db import Database
from services.kit.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    ValidationFailed,
)
from services.kit.headers import AUTH_METHOD_HEADER, USER_ID_HEADER, VERIFIED_HOTKEY_HEADER
from services.kit.requests import Context, page_of
from services.kit.server import Closable, GrpcService, ServiceContext, ServiceSpec
from services.kit.settings import Settings

log = logging.getLogger(__name__)

_KEY_NAME = re.compile(r"^[\w .$-]{1,24}$")
_USERNAME = re.compile(r"^[a-zA-Z0-9_]{3,15}$")
_OBJECT_TYPES = ("images", "chutes", "invocations")
_ACTIONS = ("read", "write", "delete", "invoke")
#: How long a hotkey's user id is remembered by the authorizer (users are never re-keyed).
_HOTKEY_CACHE_SECONDS = 60.0
#: How often each replica deletes expired signature uses (piggybacked on a check's statement).
_SWEEP_SECONDS = 60.0


def _scopes_of(request: identity_pb2.CreateApiKeyRequest) -> list[Scope]:
    problems = []
    scopes = []
    for i, scope in enumerate(request.scopes):
        object_id = scope.object_id if scope.HasField("object_id") else None
        action = scope.action if scope.HasField("action") else None
        if scope.object_type not in _OBJECT_TYPES:
            problems.append(
                FieldViolation(
                    ("body", "scopes", i, "object_type"),
                    f"Input should be {', '.join(map(repr, _OBJECT_TYPES))}",
                    "enum",
                )
            )
        if action is not None and action not in _ACTIONS:
            problems.append(
                FieldViolation(
                    ("body", "scopes", i, "action"),
                    f"Input should be {', '.join(map(repr, _ACTIONS))}",
                    "enum",
                )
            )
        scopes.append(Scope(scope.object_type, object_id, action))
    if not _KEY_NAME.match(request.name):
        problems.insert(
            0,
            FieldViolation(
                ("body", "name"),
                "String should be 1-24 word characters, spaces or .$-",
                "string_pattern_mismatch",
            ),
        )
    if problems:
        raise ValidationFailed(problems)
    return scopes


class IdentityServicer(
    identity_pb2_grpc.IdentityServiceServicer,
    identity_pb2_grpc.IdentityInternalServiceServicer,
):
    def __init__(self, context: ServiceContext) -> None:
        if context.db is None:
            raise RuntimeError("the identity service needs a database (CHUTES_DATABASE_URL)")
        self.db: Database = context.db
        self.settings = context.settings
        self.verified_keys = keys.VerifiedKeys()
        self.signatures = SignatureVerifier(context.settings.signature_window_seconds)
        self._hotkeys: dict[str, tuple[float, str]] = {}
        #: When this replica next deletes the expired signature uses (at its first check).
        self._next_sweep = 0.0

    # ---- IdentityService (REST) ------------------------------------------------------------

    async def Ping(self, request: identity_pb2.PingRequest, context: Context) -> identity_pb2.PingResponse:
        return identity_pb2.PingResponse(message="pong")

    async def RegisterUser(
        self, request: identity_pb2.RegisterUserRequest, context: Context
    ) -> identity_pb2.RegisterUserResponse:
        metadata = dict(context.invocation_metadata() or ())
        hotkey = metadata.get(VERIFIED_HOTKEY_HEADER)
        if not hotkey:
            raise Unauthenticated(
                "Registration must be signed with the hotkey (X-Chutes-Hotkey, -Nonce, -Signature)"
            )
        username = request.registration.username
        if not _USERNAME.match(username):
            raise ValidationFailed(
                [
                    FieldViolation(
                        ("body", "username"),
                        "Username must be 3-15 letters, digits or underscores",
                        "string_pattern_mismatch",
                    )
                ]
            )
        async with self.db.engine.begin() as connection:
            user = await store.create_user(
                connection, username, hotkey=str(hotkey), coldkey=request.registration.coldkey or None
            )
            if not self.settings.open_registration and not await store.use_registration_token(
                connection, request.token, user.user_id
            ):
                raise PermissionDenied("Invalid registration token")
        return identity_pb2.RegisterUserResponse(
            user_id=user.user_id,
            username=user.username,
            payment_address=user.payment_address,
            fingerprint=user.fingerprint,
        )

    async def GetCurrentUser(
        self, request: identity_pb2.GetCurrentUserRequest, context: Context
    ) -> identity_pb2.User:
        caller = require_caller()
        async with self.db.engine.connect() as connection:
            row = await store.get_user(connection, caller.user_id)
        if row is None:
            raise NotFound("User not found")
        return views.user_message(row)

    async def CreateApiKey(
        self, request: identity_pb2.CreateApiKeyRequest, context: Context
    ) -> identity_pb2.ApiKeyWithSecret:
        caller = require_caller()
        scopes = _scopes_of(request)
        async with self.db.engine.begin() as connection:
            secret, row = await store.create_api_key(
                connection, caller.user_id, request.name, admin=request.admin, scopes=scopes
            )
        return views.new_api_key_message(row, secret)

    async def ListApiKeys(
        self, request: identity_pb2.ListApiKeysRequest, context: Context
    ) -> identity_pb2.ListApiKeysResponse:
        caller = require_caller()
        page = page_of(request.page, request.limit if request.HasField("limit") else None, max_limit=100)
        async with self.db.engine.connect() as connection:
            total, rows = await store.list_api_keys(
                connection, caller.user_id, limit=page.limit, offset=page.offset
            )
        return identity_pb2.ListApiKeysResponse(
            total=total, page=page.page, limit=page.limit, items=[views.api_key_message(row) for row in rows]
        )

    async def GetApiKey(
        self, request: identity_pb2.GetApiKeyRequest, context: Context
    ) -> identity_pb2.ApiKey:
        caller = require_caller()
        async with self.db.engine.connect() as connection:
            row = await store.get_api_key(connection, caller.user_id, request.api_key_id)
        if row is None:
            raise NotFound("API key not found, or does not belong to you")
        return views.api_key_message(row)

    async def DeleteApiKey(
        self, request: identity_pb2.DeleteApiKeyRequest, context: Context
    ) -> identity_pb2.DeleteApiKeyResponse:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            deleted = await store.delete_api_key(connection, caller.user_id, request.api_key_id)
        if not deleted:
            raise NotFound("API key not found, or does not belong to you")
        return identity_pb2.DeleteApiKeyResponse(api_key_id=request.api_key_id, deleted=True)

    # ---- caller lookups (IdentityInternalService, and the kit's CallerLookup in process) -----

    async def by_api_key(self, authorization: str) -> Caller:
        parsed = keys.parse(keys.token_of(authorization))
        if parsed is None:
            raise MalformedCredential("Missing or invalid authorization header(s)")
        async with self.db.engine.connect() as connection:
            found = await store.key_for_authentication(connection, parsed)
        if found is None:
            raise Unauthenticated("Invalid token or user not found")
        if found.key_digest is not None:
            if self.verified_keys.matches_digest(parsed, found.key_digest):
                return found.caller
            raise Unauthenticated("Invalid token or user not found")
        # A key made before digests: argon2 (~100 ms of CPU, off the event loop) once, then its
        # digest is stored and every later presentation compares digests.
        if not await asyncio.to_thread(self.verified_keys.verify_legacy, parsed, found.key_hash):
            raise Unauthenticated("Invalid token or user not found")
        async with self.db.engine.begin() as connection:
            await store.store_key_digest(connection, parsed.api_key_id, keys.digest_of(parsed.key))
        return found.caller

    async def by_user_id(self, user_id: str) -> Caller:
        async with self.db.engine.connect() as connection:
            caller = await store.caller_by_user_id(connection, user_id)
        if caller is None:
            raise Unauthenticated(f"Could not find user {user_id}")
        return caller

    async def AuthenticateApiKey(
        self, request: identity_pb2.AuthenticateApiKeyRequest, context: Context
    ) -> identity_pb2.Caller:
        try:
            return caller_to_proto(await self.by_api_key(request.authorization))
        except MalformedCredential as malformed:
            raise InvalidArgument(malformed.detail) from None

    async def GetCaller(
        self, request: identity_pb2.GetCallerRequest, context: Context
    ) -> identity_pb2.Caller:
        return caller_to_proto(await self.by_user_id(request.user_id))

    async def FindUser(self, request: identity_pb2.FindUserRequest, context: Context) -> identity_pb2.Caller:
        async with self.db.engine.connect() as connection:
            caller = await store.find_caller(connection, request.user_id_or_name)
        if caller is None:
            raise NotFound(f"No user {request.user_id_or_name}")
        return caller_to_proto(caller)

    # ---- ext_authz (hotkey signatures at the gateway) --------------------------------------

    async def _user_of_hotkey(self, hotkey: str) -> str | None:
        now = time.monotonic()
        cached = self._hotkeys.get(hotkey)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.db.engine.connect() as connection:
            user_id = await store.user_id_by_hotkey(connection, hotkey)
        if user_id is not None:
            self._hotkeys[hotkey] = (now + _HOTKEY_CACHE_SECONDS, user_id)
        return user_id

    async def _first_use(self, use: Use) -> bool:
        now = time.monotonic()
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + _SWEEP_SECONDS
        async with self.db.raw() as connection:
            return await store.first_use(connection, use, sweep=sweep)

    async def verdict(self, request: AuthzRequest) -> Verdict:
        """Allow a hotkey-signed request with the verified identity, or deny it with a reason."""
        headers = request.headers
        hotkey, nonce, signature = (headers.get(f"x-chutes-{h}") for h in ("hotkey", "nonce", "signature"))
        if not (hotkey and nonce and signature):
            # A partial set is ignored, as the real API does: the request goes on without identity.
            return Verdict(upstream_headers={})
        signed = SignedRequest(hotkey, nonce, signature, request.method, request.path, request.body)
        try:
            use = self.signatures.verify(signed)
            if not await self._first_use(use):
                raise SignatureRejected(REPLAYED)
        except SignatureRejected as rejected:
            return Verdict(denied=str(rejected))
        except (ValueError, TypeError, OverflowError) as error:
            # The check reads only the client's headers and body: whatever it cannot parse is
            # the client's mistake (401, one line), never identity's failure (503, a traceback).
            log.warning("unreadable hotkey signature refused: %s", type(error).__name__)
            return Verdict(denied="Invalid request signature")
        if request.method == "POST" and request.path.split("?", 1)[0].rstrip("/") == "/users/register":
            return Verdict(upstream_headers={VERIFIED_HOTKEY_HEADER: hotkey})  # registration creates the user
        user_id = await self._user_of_hotkey(hotkey)
        if user_id is None:
            return Verdict(denied=f"Could not find user with hotkey: {hotkey}")
        return Verdict(
            upstream_headers={
                USER_ID_HEADER: user_id,
                AUTH_METHOD_HEADER: "hotkey",
                VERIFIED_HOTKEY_HEADER: hotkey,
            }
        )


async def _serve_signature_checks(servicer: object, settings: Settings) -> list[Closable]:
    assert isinstance(servicer, IdentityServicer)
    host, _, port = settings.identity_authz_address.rpartition(":")
    return [await authz_http.serve(servicer.verdict, settings.bind_host or host, int(port))]


SPEC = ServiceSpec(
    name="identity",
    grpc_services=(
        GrpcService.of(identity_pb2, identity_pb2_grpc, "IdentityService"),
        GrpcService.of(identity_pb2, identity_pb2_grpc, "IdentityInternalService"),
    ),
    make_servicer=IdentityServicer,
    answers_caller_lookups=True,
    start_side_servers=_serve_signature_checks,
)
