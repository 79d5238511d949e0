"""Software quotes (chutes/tee.py has the layout) checked against the nodes an operator registered.

This trust root is `software`, never TDX: a verified software quote proves only that a registered
node's key signed it, so it is accepted only where an operator enabled the root (`enabled`), and
every verdict names it. Checks, in this order: the root is enabled; the quote parses; its node key
is one of the registered ones; the Ed25519 signature holds; the measurements are allowed; the
report data binds the caller's nonce and the instance's certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chutes.tee import SoftwareQuote, bind_report_data
from services.attestation.measurements import AllowList, allowed


@dataclass(frozen=True)
class SoftwareTrust:
    """The software root: whether it is on, the registered nodes' keys (node id -> 32 raw Ed25519
    public-key bytes) and the allowed measurements (None: any code a registered node ran)."""

    enabled: bool = False
    node_keys: Mapping[str, bytes] = field(default_factory=dict)
    allowed_measurements: AllowList | None = None


@dataclass(frozen=True)
class SoftwareResult:
    verified: bool
    reason: str | None
    node_id: str | None = None
    report_data: bytes = b""
    measurements: Mapping[str, str] = field(default_factory=dict)


def verify_software_quote(
    raw: bytes, nonce: bytes, certificate: bytes, trust: SoftwareTrust
) -> SoftwareResult:
    """Every check of the module docstring; the first that fails is the reason."""
    if not trust.enabled:
        return SoftwareResult(verified=False, reason="the software trust root is not enabled")
    try:
        quote = SoftwareQuote.parse(raw)
    except ValueError as error:
        return SoftwareResult(verified=False, reason=f"malformed software quote: {error}")
    node_id = next((node for node, key in trust.node_keys.items() if key == quote.node_key), None)
    if node_id is None:
        return SoftwareResult(
            verified=False,
            reason=f"software quote signed by unregistered node key {quote.node_key.hex()}",
        )
    try:
        Ed25519PublicKey.from_public_bytes(quote.node_key).verify(quote.signature, quote.signed)
    except InvalidSignature:
        return SoftwareResult(verified=False, reason="software quote signature is invalid", node_id=node_id)

    def failed(reason: str) -> SoftwareResult:
        return SoftwareResult(
            verified=False,
            reason=reason,
            node_id=node_id,
            report_data=quote.report_data,
            measurements=quote.measurements,
        )

    if trust.allowed_measurements is not None and not allowed(quote.measurements, trust.allowed_measurements):
        return failed("software measurements are not in the operator's allow-list")
    if quote.report_data != bind_report_data(nonce, certificate):
        return failed("report data does not bind this nonce and certificate")
    return SoftwareResult(
        verified=True,
        reason=None,
        node_id=node_id,
        report_data=quote.report_data,
        measurements=quote.measurements,
    )
