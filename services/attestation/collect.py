"""Asking a TEE chute's instances for evidence bound to a caller's nonce, all at once.

Each routable instance answers `GET /_chutes/evidence?nonce=` on its own HTTP server
(chutes/evidence.py) with the real instance's body, `{"evidence": {"tdx_quote": <base64>,
"nvtrust_evidence": <JSON text of a list>}}`, plus the `certificate` its quote binds. One deadline
covers every instance; an instance that is down, slow, or answers anything malformed is simply
absent from the result (the caller lists it in `failed_instance_ids`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from google.protobuf import json_format, struct_pb2

from chutes.evidence import EVIDENCE_PATH
from chutes.registry.v1 import internal_pb2

log = logging.getLogger(__name__)

#: How long every instance together may take (the real API waits on its proxy similarly).
EVIDENCE_SECONDS = 10.0
_MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class CollectedEvidence:
    quote_base64: str
    certificate_base64: str
    quote: bytes
    certificate: bytes
    gpu_evidence: list[struct_pb2.Struct]


def parse_evidence(body: bytes) -> CollectedEvidence:
    """An instance's answer as evidence; ValueError when it is not the documented shape."""
    if len(body) > _MAX_BODY_BYTES:
        raise ValueError("evidence body too large")
    document = json.loads(body)
    evidence = document["evidence"]
    quote_base64, certificate_base64 = evidence["tdx_quote"], document.get("certificate", "")
    if not isinstance(quote_base64, str) or not isinstance(certificate_base64, str):
        raise ValueError("quote and certificate must be base64 text")
    try:
        quote = base64.b64decode(quote_base64, validate=True)
        certificate = base64.b64decode(certificate_base64, validate=True)
    except binascii.Error as error:
        raise ValueError(f"not base64: {error}") from None
    gpus = json.loads(evidence.get("nvtrust_evidence") or "[]")
    if not isinstance(gpus, list) or not all(isinstance(gpu, dict) for gpu in gpus):
        raise ValueError("nvtrust_evidence must be a JSON list of objects")
    return CollectedEvidence(
        quote_base64,
        certificate_base64,
        quote,
        certificate,
        [json_format.ParseDict(g, struct_pb2.Struct()) for g in gpus],
    )


class EvidenceCollector:
    def __init__(self, deadline: float = EVIDENCE_SECONDS) -> None:
        self.deadline = deadline

    async def collect(
        self, instances: Sequence[internal_pb2.TeeInstance], nonce_hex: str
    ) -> dict[str, CollectedEvidence]:
        """Evidence by instance id, for the instances that answered in time."""
        if not instances:
            return {}
        async with httpx.AsyncClient(timeout=self.deadline) as client:

            async def one(instance: internal_pb2.TeeInstance) -> CollectedEvidence | None:
                url = f"http://{instance.host}:{instance.port}{EVIDENCE_PATH}"
                try:
                    response = await client.get(url, params={"nonce": nonce_hex})
                    response.raise_for_status()
                    return parse_evidence(response.content)
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                    log.warning("no evidence from instance %s: %s", instance.instance_id, error)
                    return None

            tasks = [asyncio.ensure_future(one(instance)) for instance in instances]
            done, pending = await asyncio.wait(tasks, timeout=self.deadline)
            for task in pending:
                task.cancel()
        collected = {}
        for instance, task in zip(instances, tasks, strict=True):
            item = task.result() if task in done else None
            if item is not None:
                collected[instance.instance_id] = item
        return collected
