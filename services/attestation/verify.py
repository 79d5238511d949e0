"""One entry point for an evidence item: which trust root it claims, and whether that root
verifies it for the caller's nonce.

The kind is read from the quote's first bytes: a software quote starts with its magic
(chutes/tee.py); a TDX quote with its header (version 4 or 5, TEE type 0x81). Anything else, and
any root the operator did not enable, fails with a reason; never falls back to another root.
"""

from __future__ import annotations

import base64
import binascii
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from chutes.tee import NONCE_SIZE, is_software_quote
from services.attestation.software_tee import verify_software_quote
from services.attestation.tdx import verify_tdx
from services.attestation.trust import Trust

TrustRoot: TypeAlias = Literal["tdx", "software"]

_TDX_VERSIONS = (4, 5)
_TDX_TEE_TYPE = 0x81


@dataclass(frozen=True)
class Evidence:
    """One instance's evidence as raw bytes: its quote and the certificate the quote binds."""

    quote: bytes
    certificate: bytes = b""

    @classmethod
    def from_base64(cls, quote: str, certificate: str = "") -> Evidence:
        """From the wire form (TeeInstanceEvidence's base64 `quote` and `certificate`);
        ValueError if either is not base64."""
        try:
            return cls(
                quote=base64.b64decode(quote, validate=True),
                certificate=base64.b64decode(certificate, validate=True),
            )
        except binascii.Error as error:
            raise ValueError(f"evidence is not base64: {error}") from error


@dataclass(frozen=True)
class Verdict:
    """`verified` only when `trust_root` verified everything; otherwise `reason` says what failed.
    `trust_root` names the root that judged (None when no root could be chosen)."""

    verified: bool
    trust_root: TrustRoot | None
    reason: str | None
    measurements: Mapping[str, str] = field(default_factory=dict)
    tcb_status: str | None = None  # TDX only
    node_id: str | None = None  # software only


def evidence_kind(quote: bytes) -> TrustRoot | None:
    """The trust root a quote claims, from its first bytes; None if it claims none we know."""
    if is_software_quote(quote):
        return "software"
    if len(quote) >= 8:
        version, _key_type, tee_type = struct.unpack_from("<HHI", quote)
        if version in _TDX_VERSIONS and tee_type == _TDX_TEE_TYPE:
            return "tdx"
    return None


def verify_evidence(item: Evidence, nonce: bytes, trust: Trust, *, now: int | None = None) -> Verdict:
    """Verify `item` for `nonce` (32 raw bytes) under the enabled trust roots; `now` (unix
    seconds, default the clock) is when TDX collateral must be valid."""
    kind = evidence_kind(item.quote)
    if len(nonce) != NONCE_SIZE:
        return Verdict(False, kind, f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    if kind == "software":
        soft = verify_software_quote(item.quote, nonce, item.certificate, trust.software)
        return Verdict(soft.verified, "software", soft.reason, soft.measurements, node_id=soft.node_id)
    if kind == "tdx":
        if trust.tdx is None:
            return Verdict(False, "tdx", "the TDX trust root is not enabled (no collateral)")
        tdx = verify_tdx(
            item.quote, nonce, item.certificate, trust.tdx, int(time.time()) if now is None else now
        )
        return Verdict(tdx.verified, "tdx", tdx.reason, tdx.measurements, tdx.tcb_status)
    return Verdict(False, None, "unknown evidence kind: neither a TDX quote nor a software quote")
