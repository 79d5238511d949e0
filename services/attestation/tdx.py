"""Intel TDX quotes verified with dcap-qvl, against collateral supplied offline.

dcap-qvl (Phala Network's Rust DCAP quote verification library, MIT) checks the quote's ECDSA
signature, the PCK certificate chain up to its built-in Intel SGX Root CA, the CRLs, the QE
identity and the TCB info, and reports the platform's TCB status. Collateral (TCB info, QE
identity, CRLs and their issuer chains) comes from JSON files an operator keeps, in dcap-qvl's
`QuoteCollateralV3` form (what `dcap-qvl` fetches from a PCCS): nothing here touches the network,
so a verifier never depends on Intel's or anyone's service being up, and an operator decides when
collateral is refreshed. Collateral expires (its CRLs and TCB info have a `nextUpdate`): past it,
verification fails with dcap-qvl's reason, e.g. `CrlExpired`, until fresh collateral is put in.

Collateral is per platform family: the quote's FMSPC and the PCK CA that issued its
certificate (`platform` or `processor`) pick the file, so one folder can serve every kind of
machine in a fleet.

What a verified quote must also satisfy (`verify_tdx`), in this order:
1. signature and chain (above); 2. not a debug TD; 3. TCB status among the accepted ones;
4. measurements (MRTD, RTMR0-3) in the operator's allow-list (services/attestation/measurements.py);
5. report data binds the caller's nonce and the instance's certificate (chutes/tee.py
`bind_report_data`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeAlias

import dcap_qvl
from cryptography import x509
from cryptography.x509.oid import NameOID

from chutes.tee import bind_report_data
from services.attestation.measurements import AllowList, allowed

#: TCB statuses accepted unless the operator says otherwise: up to date, or up to date with
#: software mitigations the guest is expected to carry (the usual state of current TDX hosts).
DEFAULT_TCB_STATUSES = frozenset({"UpToDate", "SWHardeningNeeded"})

CollateralKey: TypeAlias = tuple[str, str]  # (FMSPC as uppercase hex, "platform" | "processor")


@dataclass(frozen=True)
class TdxTrust:
    """What the TDX trust root accepts: collateral per platform, TCB statuses, measurements."""

    collateral: Mapping[CollateralKey, dcap_qvl.QuoteCollateralV3]
    allowed_measurements: AllowList = ()
    tcb_statuses: frozenset[str] = DEFAULT_TCB_STATUSES


@dataclass(frozen=True)
class TdxResult:
    """What verifying one quote found. `verified` is true only when every check passed; the
    other fields are filled as far as verification got (empty before the signature checked)."""

    verified: bool
    reason: str | None
    signature_valid: bool = False
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    report_data: bytes = b""
    measurements: Mapping[str, str] = field(default_factory=dict)
    debug: bool = False  # the TD's DEBUG attribute


def _ca_of_chain(pem_chain: str) -> str:
    """`platform` or `processor`: the PCK CA at the head of a collateral's PCK CRL issuer chain."""
    head = x509.load_pem_x509_certificates(pem_chain.encode())[0]
    names = head.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    for ca in ("platform", "processor"):
        if ca in common_name.lower():
            return ca
    raise ValueError(f"the PCK CRL issuer chain starts with an unknown CA {common_name!r}")


def load_collateral(path: Path) -> dict[CollateralKey, dcap_qvl.QuoteCollateralV3]:
    """Collateral from one JSON file or from every `*.json` file of a folder, keyed by the FMSPC
    its TCB info is for and the PCK CA its CRL is from."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    collateral: dict[CollateralKey, dcap_qvl.QuoteCollateralV3] = {}
    for file in files:
        text = file.read_text()
        item = dcap_qvl.QuoteCollateralV3.from_json(text)
        fmspc = str(json.loads(item.tcb_info)["fmspc"]).upper()
        collateral[(fmspc, _ca_of_chain(item.pck_crl_issuer_chain))] = item
    return collateral


# dcap-qvl's TD report classes are distinct at run time (not subclasses, whatever the stub says).
_TD_REPORTS = (dcap_qvl.TdReport10, dcap_qvl.TdReport15, dcap_qvl.TdReport15Ex)


def _measurements(
    report: dcap_qvl.TdReport10 | dcap_qvl.TdReport15 | dcap_qvl.TdReport15Ex,
) -> dict[str, str]:
    return {
        "mrtd": report.mr_td.hex(),
        "rtmr0": report.rt_mr0.hex(),
        "rtmr1": report.rt_mr1.hex(),
        "rtmr2": report.rt_mr2.hex(),
        "rtmr3": report.rt_mr3.hex(),
    }


def verify_quote_signature(
    raw: bytes,
    collateral: Mapping[CollateralKey, dcap_qvl.QuoteCollateralV3],
    now: int | None = None,
) -> TdxResult:
    """Check only what Intel signs: the quote's signature, its chain to the Intel root and the
    collateral, at unix time `now` (default: the clock). `verified` means exactly that; the TCB
    status, report data and measurements are reported for the caller's policy."""
    try:
        quote = dcap_qvl.parse_quote(raw)
    except ValueError as error:
        return TdxResult(verified=False, reason=f"malformed TDX quote: {error}")
    if not quote.is_tdx():
        return TdxResult(verified=False, reason=f"not a TDX quote ({quote.quote_type()})")
    try:
        key = (quote.fmspc().upper(), quote.ca())
    except ValueError as error:
        return TdxResult(verified=False, reason=f"TDX quote names no platform: {error}")
    chosen = collateral.get(key)
    if chosen is None:
        return TdxResult(verified=False, reason=f"no TDX collateral for FMSPC {key[0]} (PCK {key[1]} CA)")
    try:
        report = dcap_qvl.verify(raw, chosen, int(time.time()) if now is None else now)
    except ValueError as error:
        return TdxResult(verified=False, reason=f"TDX quote signature or collateral: {error}")
    # The body parsed from the same bytes is the one the signature just covered.
    body = quote.report
    if not isinstance(body, _TD_REPORTS):
        return TdxResult(verified=False, reason="TDX quote carries no TD report")
    return TdxResult(
        verified=True,
        reason=None,
        signature_valid=True,
        tcb_status=report.status,
        advisory_ids=tuple(report.advisory_ids),
        report_data=body.report_data,
        measurements=_measurements(body),
        debug=bool(body.td_attributes[0] & 0x01),
    )


def verify_tdx(
    raw: bytes, nonce: bytes, certificate: bytes, trust: TdxTrust, now: int | None = None
) -> TdxResult:
    """Every check of the module docstring; the first that fails is the reason."""
    signed = verify_quote_signature(raw, trust.collateral, now)
    if not signed.verified:
        return signed

    def failed(reason: str) -> TdxResult:
        # What the signature check found stays reported: the caller shows why policy refused it.
        return replace(signed, verified=False, reason=reason)

    # TD attributes bit 0 is DEBUG: the host can read and change a debug TD's memory, so its
    # quote proves nothing about what runs inside, however valid the signature.
    if signed.debug:
        return failed("the TD runs in debug mode")
    if signed.tcb_status not in trust.tcb_statuses:
        advisories = f" (advisories: {', '.join(signed.advisory_ids)})" if signed.advisory_ids else ""
        return failed(f"TCB status {signed.tcb_status} is not accepted{advisories}")
    if not allowed(signed.measurements, trust.allowed_measurements):
        return failed("TDX measurements are not in the operator's allow-list")
    if signed.report_data != bind_report_data(nonce, certificate):
        return failed("report data does not bind this nonce and certificate")
    return signed
