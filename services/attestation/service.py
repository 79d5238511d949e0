"""The attestation service's gRPC servicer: TEE evidence of a chute's instances, verified.

`GET /chutes/{chute}/evidence?nonce=` runs the real route's checks in its order (global rate
limit, nonce present, chute visible, nonce well-formed, chute TEE, SDK new enough), then asks
every routable instance for evidence bound to the nonce (collect.py), in parallel under one
deadline, and verifies each item (verify.py). An instance that does not answer is listed in
`failed_instance_ids`, never an error for the whole call. Chutes, instances and the nodes' keys
come from the registry (RegistryInternalService.GetTeeInstances).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import grpc

from chutes.attestation.v1 import attestation_pb2, attestation_pb2_grpc
from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
from services.attestation.collect import EvidenceCollector
from services.attestation.trust import Trust, load_trust
from services.attestation.verify import Evidence, verify_evidence
from services.kit.auth import optional_caller
from services.kit.caller import caller_to_proto
from services.kit.channels import channel_at
from services.kit.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    TooManyRequests,
    Unavailable,
    ValidationFailed,
)
from services.kit.requests import Context
from services.kit.server import GrpcService, ServiceContext, ServiceSpec
from services.kit.versions import version_tuple

#: The real route's limit: evidence requests per minute, across all callers.
REQUESTS_PER_MINUTE = 60
#: TEE evidence needs an SDK that binds the nonce (the real API's floor).
MIN_CHUTES_VERSION = (0, 6, 0)
REGISTRY_SECONDS = 5.0
NONCE_HEX_CHARS = 64


class RateLimit:
    """At most `limit` calls in any `window` seconds (a sliding window of call times)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self.calls: deque[float] = deque()

    def allow(self) -> bool:
        now = time.monotonic()
        while self.calls and self.calls[0] <= now - self.window:
            self.calls.popleft()
        if len(self.calls) >= self.limit:
            return False
        self.calls.append(now)
        return True


def nonce_bytes(nonce: str) -> bytes:
    """The caller's nonce as 32 bytes; InvalidArgument with the real API's messages."""
    if not nonce:
        raise InvalidArgument("Nonce is required")
    if len(nonce) != NONCE_HEX_CHARS:
        raise InvalidArgument(f"Nonce must be exactly 64 hex characters (32 bytes), got {len(nonce)}")
    try:
        return bytes.fromhex(nonce)
    except ValueError:
        raise InvalidArgument("Nonce must be a valid hexadecimal string") from None


class AttestationServicer(attestation_pb2_grpc.AttestationServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.registry = internal_pb2_grpc.RegistryInternalServiceStub(
            channel_at(context.settings.address_of("registry"))
        )
        self.rate_limit = RateLimit(REQUESTS_PER_MINUTE)
        #: The roots the operator enabled (CHUTES_TEE_*, read once: collateral is parsed here).
        self.trust: Trust = load_trust()
        self.collector = EvidenceCollector()

    async def GetTeeChuteEvidence(
        self, request: attestation_pb2.GetTeeChuteEvidenceRequest, context: Context
    ) -> attestation_pb2.TeeChuteEvidence:
        if not self.rate_limit.allow():
            raise TooManyRequests("Rate limit exceeded. Try again later.")
        if not request.HasField("nonce"):
            raise ValidationFailed([FieldViolation(("query", "nonce"), "Field required", "missing")])
        chute = await self._tee_instances(request.chute_id_or_name)
        nonce = nonce_bytes(request.nonce)
        if not chute.tee:
            raise InvalidArgument(f"Chute {chute.chute_id} is not TEE-enabled")
        if version_tuple(chute.chutes_version) < MIN_CHUTES_VERSION:
            raise InvalidArgument(
                f"Chute {chute.chute_id} was built with chutes {chute.chutes_version or 'unknown'}; "
                "TEE evidence needs 0.6.0 or newer"
            )
        collected = await self.collector.collect(chute.instances, request.nonce)
        answer = attestation_pb2.TeeChuteEvidence()
        for instance in chute.instances:
            item = collected.get(instance.instance_id)
            if item is None:
                answer.failed_instance_ids.append(instance.instance_id)
                continue
            verdict = verify_evidence(
                Evidence(item.quote, item.certificate), nonce, self._trust_for(chute, instance)
            )
            answer.evidence.append(
                attestation_pb2.TeeInstanceEvidence(
                    instance_id=instance.instance_id,
                    quote=item.quote_base64,
                    certificate=item.certificate_base64,
                    gpu_evidence=item.gpu_evidence,
                    verified=verdict.verified,
                    trust_root=verdict.trust_root or "",
                    reason=verdict.reason or "",
                )
            )
        return answer

    def _trust_for(self, chute: internal_pb2.TeeInstances, instance: internal_pb2.TeeInstance) -> Trust:
        """The enabled roots, narrowed to this instance: a software quote must be signed by the
        key its own node registered and measure the code the chute was deployed with."""
        if instance.node_tee != "software" or len(instance.node_tee_public_key) != 32:
            return dataclasses.replace(
                self.trust, software=dataclasses.replace(self.trust.software, node_keys={})
            )
        code = chute.code_sha256
        operator_rules = self.trust.software.allowed_measurements
        # Both must hold: the deployed code, and the operator's list (its rules that allow it).
        rules = (
            ({"code": code},)
            if operator_rules is None
            else tuple({**rule, "code": code} for rule in operator_rules if rule.get("code", code) == code)
        )
        software = dataclasses.replace(
            self.trust.software,
            node_keys={instance.node_id: instance.node_tee_public_key},
            allowed_measurements=rules,
        )
        return dataclasses.replace(self.trust, software=software)

    async def _tee_instances(self, chute_id_or_name: str) -> internal_pb2.TeeInstances:
        caller = optional_caller()
        ask = internal_pb2.GetTeeInstancesRequest(chute_id_or_name=chute_id_or_name)
        if caller is not None:
            ask.caller.CopyFrom(caller_to_proto(caller))
        try:
            answer: internal_pb2.TeeInstances = await self.registry.GetTeeInstances(
                ask, timeout=REGISTRY_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound("Chute not found") from None
            raise Unavailable("The registry cannot be asked right now; try again shortly") from None
        return answer


SPEC = ServiceSpec(
    name="attestation",
    grpc_services=(GrpcService.of(attestation_pb2, attestation_pb2_grpc, "AttestationService"),),
    make_servicer=AttestationServicer,
)
