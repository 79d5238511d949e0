"""TEE evidence verification: a real TDX quote (tests/data/tdx, with offline collateral) and the
software TEE, each through its own verifier and through `verify_evidence`. Pure and fast."""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chutes.tee import (
    QUOTE_SIZE,
    SoftwareQuote,
    bind_report_data,
    load_or_create_node_key,
    make_software_quote,
    public_key_bytes,
)
from services.attestation.measurements import allowed, parse_allow_list
from services.attestation.software_tee import SoftwareTrust
from services.attestation.tdx import (
    TdxTrust,
    load_collateral,
    verify_quote_signature,
    verify_tdx,
)
from services.attestation.trust import TeeSettings, Trust, load_trust, parse_node_keys
from services.attestation.verify import Evidence, evidence_kind, verify_evidence

TDX_DIR = Path(__file__).parent / "data" / "tdx"
SAMPLE_QUOTE = (TDX_DIR / "quote.bin").read_bytes()
# Inside the sample collateral's validity (issued 2025-06-19, next update 2025-07-19).
SAMPLE_TIME = calendar.timegm((2025, 6, 25, 0, 0, 0))
SAMPLE_MEASUREMENTS = {
    "mrtd": "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
    "de03ae6dc5f87f27428b2538873118b7",
    "rtmr0": "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c"
    "48aca29b220b80b6a540cf994b9bc9c0",
}
NONCE = bytes.fromhex("11" * 32)
OTHER_NONCE = bytes.fromhex("22" * 32)
CERT = b"instance certificate DER"
CODE = b"from chutes.chute import Chute\nchute = Chute(username='u', name='echo', tee=True)\n"


@pytest.fixture(scope="module")
def tdx_trust() -> TdxTrust:
    return TdxTrust(
        collateral=load_collateral(TDX_DIR),
        allowed_measurements=parse_allow_list(json.dumps([SAMPLE_MEASUREMENTS])),
    )


@pytest.fixture(scope="module")
def node_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def software_trust(key: Ed25519PrivateKey, *, enabled: bool = True) -> SoftwareTrust:
    return SoftwareTrust(enabled=enabled, node_keys={"node-1": public_key_bytes(key.public_key())})


def tampered(raw: bytes, offset: int) -> bytes:
    changed = bytearray(raw)
    changed[offset] ^= 0x01
    return bytes(changed)


# --- TDX ------------------------------------------------------------------------------------------


def test_sample_tdx_quote_signature_chains_to_intel_root() -> None:
    result = verify_quote_signature(SAMPLE_QUOTE, load_collateral(TDX_DIR), SAMPLE_TIME)
    assert result.verified and result.signature_valid and result.reason is None
    assert result.tcb_status == "UpToDate"
    assert result.advisory_ids == ()
    assert not result.debug
    assert len(result.report_data) == 64
    assert set(result.measurements) == {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"}
    assert all(len(bytes.fromhex(value)) == 48 for value in result.measurements.values())
    assert allowed(result.measurements, [SAMPLE_MEASUREMENTS])


def test_tampered_tdx_quote_fails() -> None:
    collateral = load_collateral(TDX_DIR)
    # 600: inside the TD report body (report data); 1200: inside the signature data.
    for offset in (600, 1200):
        result = verify_quote_signature(tampered(SAMPLE_QUOTE, offset), collateral, SAMPLE_TIME)
        assert not result.verified and not result.signature_valid
        assert result.reason is not None and "signature" in result.reason


def test_expired_collateral_fails_with_dcap_reason() -> None:
    result = verify_quote_signature(SAMPLE_QUOTE, load_collateral(TDX_DIR), int(time.time()))
    assert not result.verified
    assert result.reason is not None and "Expired" in result.reason


def test_tdx_quote_without_collateral_for_its_platform_fails() -> None:
    result = verify_quote_signature(SAMPLE_QUOTE, {}, SAMPLE_TIME)
    assert not result.verified
    assert result.reason == "no TDX collateral for FMSPC B0C06F000000 (PCK platform CA)"


def test_sample_tdx_quote_cannot_bind_our_nonce(tdx_trust: TdxTrust) -> None:
    """Chain, TCB status and measurements pass; the sample was made for another nonce."""
    result = verify_tdx(SAMPLE_QUOTE, NONCE, CERT, tdx_trust, SAMPLE_TIME)
    assert not result.verified and result.signature_valid
    assert result.tcb_status == "UpToDate"
    assert result.reason == "report data does not bind this nonce and certificate"


def test_tdx_measurements_outside_allow_list_fail(tdx_trust: TdxTrust) -> None:
    for allow_list in ((), ({"mrtd": "00" * 48},)):
        trust = replace(tdx_trust, allowed_measurements=allow_list)
        result = verify_tdx(SAMPLE_QUOTE, NONCE, CERT, trust, SAMPLE_TIME)
        assert result.reason == "TDX measurements are not in the operator's allow-list"


def test_tdx_tcb_status_not_accepted_fails(tdx_trust: TdxTrust) -> None:
    trust = replace(tdx_trust, tcb_statuses=frozenset({"SWHardeningNeeded"}))
    result = verify_tdx(SAMPLE_QUOTE, NONCE, CERT, trust, SAMPLE_TIME)
    assert result.reason == "TCB status UpToDate is not accepted"


def test_verify_evidence_dispatches_tdx(tdx_trust: TdxTrust) -> None:
    item = Evidence.from_base64(base64.b64encode(SAMPLE_QUOTE).decode(), "")
    assert evidence_kind(item.quote) == "tdx"
    verdict = verify_evidence(item, NONCE, Trust(tdx=tdx_trust), now=SAMPLE_TIME)
    assert (verdict.verified, verdict.trust_root) == (False, "tdx")
    assert verdict.reason == "report data does not bind this nonce and certificate"
    assert verdict.tcb_status == "UpToDate"
    assert verdict.measurements["mrtd"] == SAMPLE_MEASUREMENTS["mrtd"]

    broken = verify_evidence(
        Evidence(tampered(SAMPLE_QUOTE, 600)), NONCE, Trust(tdx=tdx_trust), now=SAMPLE_TIME
    )
    assert (broken.verified, broken.trust_root) == (False, "tdx")
    assert broken.reason is not None and "signature" in broken.reason

    disabled = verify_evidence(Evidence(SAMPLE_QUOTE), NONCE, Trust(), now=SAMPLE_TIME)
    assert (disabled.verified, disabled.trust_root) == (False, "tdx")
    assert disabled.reason == "the TDX trust root is not enabled (no collateral)"


# --- software TEE ---------------------------------------------------------------------------------


def test_software_quote_layout(node_key: Ed25519PrivateKey) -> None:
    raw = make_software_quote(node_key, nonce=NONCE, certificate=CERT, code=CODE, runtime="rt", produced_at=7)
    assert len(raw) == QUOTE_SIZE == 244
    assert raw[:8] == b"CHUTESSW" and raw[8:10] == b"\x01\x00"
    quote = SoftwareQuote.parse(raw)
    assert quote.node_key == public_key_bytes(node_key.public_key()) == raw[12:44]
    assert quote.produced_at == 7
    assert quote.report_data == raw[52:116] == bind_report_data(NONCE, CERT)
    assert quote.report_data[:32] == hashlib.sha256(NONCE + CERT).digest()
    assert quote.report_data[32:] == bytes(32)
    assert quote.measurements == {
        "code": hashlib.sha256(CODE).hexdigest(),
        "runtime": hashlib.sha256(b"rt").hexdigest(),
    }
    assert quote.signed == raw[:180] and quote.signature == raw[180:]


def test_software_evidence_verifies_with_its_nonce(node_key: Ed25519PrivateKey) -> None:
    item = Evidence(make_software_quote(node_key, nonce=NONCE, certificate=CERT, code=CODE), CERT)
    verdict = verify_evidence(item, NONCE, Trust(software=software_trust(node_key)))
    assert (verdict.verified, verdict.trust_root, verdict.reason) == (True, "software", None)
    assert verdict.node_id == "node-1"
    assert verdict.measurements["code"] == hashlib.sha256(CODE).hexdigest()
    assert verdict.tcb_status is None


def test_software_evidence_fails_for_another_nonce_or_certificate(
    node_key: Ed25519PrivateKey,
) -> None:
    raw = make_software_quote(node_key, nonce=NONCE, certificate=CERT, code=CODE)
    trust = Trust(software=software_trust(node_key))
    for item, nonce in ((Evidence(raw, CERT), OTHER_NONCE), (Evidence(raw, b"other"), NONCE)):
        verdict = verify_evidence(item, nonce, trust)
        assert (verdict.verified, verdict.trust_root) == (False, "software")
        assert verdict.reason == "report data does not bind this nonce and certificate"


def test_tampered_software_evidence_fails(node_key: Ed25519PrivateKey) -> None:
    raw = make_software_quote(node_key, nonce=NONCE, certificate=CERT, code=CODE)
    trust = Trust(software=software_trust(node_key))
    # produced_at, report data, code measurement, signature: each byte is covered.
    for offset in (44, 60, 120, 200):
        verdict = verify_evidence(Evidence(tampered(raw, offset), CERT), NONCE, trust)
        assert (verdict.verified, verdict.trust_root) == (False, "software")
        assert verdict.reason == "software quote signature is invalid"
    truncated = verify_evidence(Evidence(raw[:-1], CERT), NONCE, trust)
    assert truncated.reason == "malformed software quote: a software quote is 244 bytes, got 243"


def test_software_evidence_from_an_unregistered_node_fails(node_key: Ed25519PrivateKey) -> None:
    stranger = Ed25519PrivateKey.generate()
    raw = make_software_quote(stranger, nonce=NONCE, certificate=CERT, code=CODE)
    verdict = verify_evidence(Evidence(raw, CERT), NONCE, Trust(software=software_trust(node_key)))
    assert not verdict.verified
    assert verdict.reason is not None and verdict.reason.startswith(
        "software quote signed by unregistered node key"
    )
    # A quote re-signed by another key but claiming the registered key fails on the signature.
    forged = SoftwareQuote.parse(raw).signed[:12] + public_key_bytes(node_key.public_key())
    forged += raw[44:180]
    verdict = verify_evidence(
        Evidence(forged + stranger.sign(forged), CERT), NONCE, Trust(software=software_trust(node_key))
    )
    assert verdict.reason == "software quote signature is invalid"


def test_software_root_disabled_fails(node_key: Ed25519PrivateKey) -> None:
    raw = make_software_quote(node_key, nonce=NONCE, certificate=CERT, code=CODE)
    for trust in (Trust(), Trust(software=software_trust(node_key, enabled=False))):
        verdict = verify_evidence(Evidence(raw, CERT), NONCE, trust)
        assert (verdict.verified, verdict.trust_root) == (False, "software")
        assert verdict.reason == "the software trust root is not enabled"


def test_software_measurements_allow_list(node_key: Ed25519PrivateKey) -> None:
    raw = make_software_quote(node_key, nonce=NONCE, certificate=CERT, code=CODE)
    base = software_trust(node_key)
    ours = replace(base, allowed_measurements=({"code": hashlib.sha256(CODE).hexdigest()},))
    others = replace(base, allowed_measurements=({"code": "00" * 32},))
    assert verify_evidence(Evidence(raw, CERT), NONCE, Trust(software=ours)).verified
    verdict = verify_evidence(Evidence(raw, CERT), NONCE, Trust(software=others))
    assert verdict.reason == "software measurements are not in the operator's allow-list"


# --- dispatch, settings, keys ---------------------------------------------------------------------


def test_unknown_evidence_and_bad_nonce_fail(node_key: Ed25519PrivateKey) -> None:
    trust = Trust(software=software_trust(node_key))
    for quote in (b"", b"not a quote at all", bytes(600)):
        verdict = verify_evidence(Evidence(quote), NONCE, trust)
        assert (verdict.verified, verdict.trust_root) == (False, None)
        assert verdict.reason == "unknown evidence kind: neither a TDX quote nor a software quote"
    raw = make_software_quote(node_key, nonce=NONCE, certificate=CERT, code=CODE)
    verdict = verify_evidence(Evidence(raw, CERT), NONCE[:16], trust)
    assert verdict.reason == "nonce must be 32 bytes, got 16"
    with pytest.raises(ValueError, match="not base64"):
        Evidence.from_base64("***")


def test_trust_from_settings(node_key: Ed25519PrivateKey) -> None:
    hex_key = public_key_bytes(node_key.public_key()).hex()
    trust = load_trust(
        TeeSettings(
            tdx_collateral=TDX_DIR,
            tdx_measurements=json.dumps([SAMPLE_MEASUREMENTS]),
            software=True,
            software_node_keys=f"static={hex_key}",
        ),
        registered_node_keys={"registered": bytes(32)},
    )
    assert trust.tdx is not None
    assert list(trust.tdx.collateral) == [("B0C06F000000", "platform")]
    assert trust.tdx.tcb_statuses == {"UpToDate", "SWHardeningNeeded"}
    assert trust.software.enabled and trust.software.allowed_measurements is None
    assert set(trust.software.node_keys) == {"static", "registered"}
    # Defaults: no TDX collateral, software off.
    default = load_trust(TeeSettings())
    assert default.tdx is None and not default.software.enabled
    with pytest.raises(ValueError):
        parse_node_keys("node=abcd")
    with pytest.raises(ValueError):
        parse_allow_list('[{"mrtd": "zz"}]')


def test_node_key_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node-tee-key.pem"
    key = load_or_create_node_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_or_create_node_key(path)
    assert public_key_bytes(again.public_key()) == public_key_bytes(key.public_key())
