"""The evidence endpoint a TEE chute's instance serves: `GET /_chutes/evidence?nonce=<64 hex>`.

The attestation service asks every instance of a TEE chute for evidence bound to the caller's
nonce (services/attestation/service.py). On a node with the software TEE (chutes/tee.py) the
miner gives the instance the node's signing key (`CHUTES_TEE_NODE_KEY`, a PEM file); the
instance answers with a software quote binding the nonce and its own public key, measuring the
chute file it runs. The body has the real instance's shape (`{"evidence": {"tdx_quote",
"nvtrust_evidence"}}`), plus `certificate`: on the real platform that is the TLS certificate of
the connection, which the API captures; instances here serve plain HTTP, so each makes an Ed25519
key at start and names its public key, the bytes its quotes bind. A TDX node would answer the
same shape with a quote from the VM's attestation service instead.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.responses import JSONResponse

from chutes.tee import NONCE_SIZE, load_node_key, make_software_quote, public_key_bytes

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

EVIDENCE_PATH = "/_chutes/evidence"
#: Set by the miner on nodes that offer the software TEE: the node's key file.
NODE_KEY_ENV = "CHUTES_TEE_NODE_KEY"


class EvidenceEndpoint:
    """Answers evidence requests for one instance: the node's key, the instance's own key, the
    code it runs."""

    def __init__(self, node_key: Ed25519PrivateKey, code: bytes) -> None:
        self.node_key = node_key
        self.code = code
        self.certificate = public_key_bytes(Ed25519PrivateKey.generate().public_key())

    @classmethod
    def from_environment(cls, code: bytes) -> EvidenceEndpoint | None:
        """The endpoint when this node offers the software TEE (the miner set the key), else None."""
        path = os.environ.get(NODE_KEY_ENV)
        return cls(load_node_key(Path(path)), code) if path else None

    def evidence(self, nonce_hex: str) -> dict[str, object]:
        """The answer to one request; ValueError when the nonce is not 64 hex characters."""
        nonce = bytes.fromhex(nonce_hex)
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE * 2} hex characters")
        quote = make_software_quote(self.node_key, nonce=nonce, certificate=self.certificate, code=self.code)
        return {
            "evidence": {"tdx_quote": base64.b64encode(quote).decode(), "nvtrust_evidence": "[]"},
            "certificate": base64.b64encode(self.certificate).decode(),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        nonces = query.get("nonce", [])
        status: int
        body: dict[str, object]
        status, body = 200, {}
        if scope["method"] != "GET":
            status, body = 405, {"detail": "Method Not Allowed"}
        elif len(nonces) != 1:
            status, body = 400, {"detail": "one nonce is required"}
        else:
            try:
                body = self.evidence(nonces[0])
            except ValueError as error:
                status, body = 400, {"detail": f"bad nonce: {error}"}
        await JSONResponse(body, status_code=status)(scope, receive, send)
