"""The software TEE: quote-shaped evidence for machines without Intel TDX, and the report-data
binding every TEE chute's evidence uses (software or TDX).

A software quote proves much less than a TDX quote: only that the holder of a node's private
key (the miner's machine, which the operator registered) said "this instance, running this code,
answers this nonce over this certificate". It exists so that the whole evidence path runs end to
end on a CPU; verifiers label it trust root `software` and accept it only where an operator
enabled that root (services/attestation/software_tee.py). It is never a TDX quote: its first
bytes are a magic that no TDX quote starts with (a TDX quote starts with its version, 4 or 5, as
a little-endian u16).

Report-data binding (both kinds of evidence)
--------------------------------------------
The caller picks a 32-byte nonce (64 hex characters on the wire). The instance puts

    report_data[0:32]  = sha256(nonce || certificate)
    report_data[32:64] = 32 zero bytes (reserved)

into its quote, where `nonce` is the 32 raw bytes (not the hex text) and `certificate` is the
exact bytes the evidence item carries as its certificate (the DER of the instance's TLS
certificate, or its raw public key when it serves no TLS; empty when it has neither, which then
binds the nonce alone). One hash binds both, so a quote made for another nonce or another
certificate fails, and a replayed quote cannot be moved onto another instance's key.

Software quote layout, version 1 (244 bytes, integers little-endian as in a TDX quote)
----------------------------------------------------------------------------------------

    offset  size  field
         0     8  magic        b"CHUTESSW"
         8     2  version      1 (u16)
        10     2  reserved     0 (u16)
        12    32  node_key     raw Ed25519 public key of the node that signed
        44     8  produced_at  unix seconds when made (u64); informational, the nonce is what
                               makes evidence fresh
        52    64  report_data  the binding above
       116    32  mr_code      sha256 of the chute's code (the file the instance runs)
       148    32  mr_runtime   sha256 of the runtime descriptor ("chutes-suite <version>")
       180    64  signature    Ed25519 signature by node_key over bytes [0:180]

Measurements are exposed by name as `code` and `runtime` (lowercase hex), like a TDX quote's
`mrtd` and `rtmr0`..`rtmr3`, so one operator allow-list format serves both roots.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

NONCE_SIZE = 32
REPORT_DATA_SIZE = 64
MAGIC = b"CHUTESSW"
VERSION = 1
# magic, version, reserved, node_key, produced_at, report_data, mr_code, mr_runtime
_SIGNED = struct.Struct("<8sHH32sQ64s32s32s")
SIGNATURE_SIZE = 64
QUOTE_SIZE = _SIGNED.size + SIGNATURE_SIZE


def bind_report_data(nonce: bytes, certificate: bytes) -> bytes:
    """The 64 bytes of report data that bind `nonce` (32 raw bytes) and `certificate`."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    return hashlib.sha256(nonce + certificate).digest() + bytes(REPORT_DATA_SIZE - 32)


def runtime_descriptor() -> str:
    """What `mr_runtime` measures: the SDK distribution and its version."""
    try:
        sdk_version = version("chutes-suite")
    except PackageNotFoundError:  # a source checkout that was never installed
        sdk_version = "unknown"
    return f"chutes-suite {sdk_version}"


@dataclass(frozen=True)
class SoftwareQuote:
    """A parsed software quote (the layout is in the module docstring)."""

    node_key: bytes
    produced_at: int
    report_data: bytes
    mr_code: bytes
    mr_runtime: bytes
    signature: bytes
    signed: bytes  # bytes [0:180], what the signature covers

    @property
    def measurements(self) -> dict[str, str]:
        return {"code": self.mr_code.hex(), "runtime": self.mr_runtime.hex()}

    @classmethod
    def parse(cls, raw: bytes) -> SoftwareQuote:
        """Split `raw` into its fields; ValueError if it is not a version-1 software quote.

        Parsing checks the shape only: the signature is the verifier's business.
        """
        if len(raw) != QUOTE_SIZE:
            raise ValueError(f"a software quote is {QUOTE_SIZE} bytes, got {len(raw)}")
        magic, quote_version, _reserved, node_key, produced_at, report_data, mr_code, mr_runtime = (
            _SIGNED.unpack_from(raw)
        )
        if magic != MAGIC:
            raise ValueError("not a software quote (bad magic)")
        if quote_version != VERSION:
            raise ValueError(f"unsupported software quote version {quote_version}")
        return cls(
            node_key=node_key,
            produced_at=produced_at,
            report_data=report_data,
            mr_code=mr_code,
            mr_runtime=mr_runtime,
            signature=raw[_SIGNED.size :],
            signed=raw[: _SIGNED.size],
        )


def is_software_quote(raw: bytes) -> bool:
    """Whether `raw` claims to be a software quote (by its magic; nothing is checked)."""
    return raw.startswith(MAGIC)


def make_software_quote(
    node_key: Ed25519PrivateKey,
    *,
    nonce: bytes,
    certificate: bytes,
    code: bytes,
    runtime: str | None = None,
    produced_at: int | None = None,
) -> bytes:
    """A signed software quote binding `nonce` and `certificate`, measuring `code`."""
    signed = _SIGNED.pack(
        MAGIC,
        VERSION,
        0,
        public_key_bytes(node_key.public_key()),
        int(time.time()) if produced_at is None else produced_at,
        bind_report_data(nonce, certificate),
        hashlib.sha256(code).digest(),
        hashlib.sha256((runtime_descriptor() if runtime is None else runtime).encode()).digest(),
    )
    return signed + node_key.sign(signed)


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key (what a node registers, hex-encoded)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_node_key(path: Path) -> Ed25519PrivateKey:
    """The node's signing key from a PKCS#8 PEM file."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def load_or_create_node_key(path: Path) -> Ed25519PrivateKey:
    """The node's key at `path`, created (readable by its owner only) on first use."""
    if path.exists():
        return load_node_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes creating the key at once must not each keep a different one.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_node_key(path)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    return key
