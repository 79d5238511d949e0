"""Hotkey-signed requests (spec/chutes-api.md 2.1, official-client-wire.md 2).

A request carrying `X-Chutes-Hotkey`, `X-Chutes-Nonce` and `X-Chutes-Signature` is signed with
the sr25519 key of the SS58 hotkey over the UTF-8 string `hotkey:nonce:tail`, where the tail is
the route's purpose word for bodiless requests (GET, DELETE) and the hex sha256 of the raw body
for the others. The nonce is unix seconds within the window of the server's clock.

Beyond the real API, an exact replay (the same signature bytes on the same method and path inside
the window) is refused. Requests that share a nonce, or one header set reused on another path,
pass: the published CLI does both. `verify` checks everything but the replay and returns the
request's `Use`; the caller records it in the store every identity replica shares
(store.first_use), since a replay may reach any of them.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

import sr25519

#: The purpose words the published client signs bodiless requests with, by path.
_PURPOSES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/chutes/[^/]+/hf_info/?$"), "cache"),
    (re.compile(r"^/(chutes|encrypted_logs)(/|$)"), "chutes"),
    (re.compile(r"^/images(/|$)"), "images"),
    (re.compile(r"^/api_keys(/|$)"), "api_keys"),
    (re.compile(r"^/users/me/?$"), "me"),
    (re.compile(r"^/instances(/|$)"), "logs"),
    (re.compile(r"^/secrets(/|$)"), "secrets"),
]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SS58_PREFIX = b"SS58PRE"
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: Unix seconds: ASCII digits, never more than a 64-bit number holds.
_NONCE = re.compile(r"[0-9]{1,19}")
#: 64 signature bytes in hex, `0x` optional: anything else is refused before any decoding.
_SIGNATURE = re.compile(r"(0x)?[0-9a-fA-F]{128}")
#: The longest SS58 address of a 32-byte key (two prefix bytes) is 49 characters.
_MAX_SS58 = 64
#: How much of a client's hotkey a denial repeats (a 5,000-character one is not echoed whole).
_MAX_ECHOED = 64


class SignatureRejected(Exception):
    """The request claims a hotkey but does not prove it; the message is the client's detail."""


@dataclass(frozen=True)
class SignedRequest:
    hotkey: str
    nonce: str
    signature: str
    method: str
    path: str  # with the query string
    body: bytes


def purpose_of(path: str) -> str | None:
    bare = path.split("?", 1)[0]
    for pattern, purpose in _PURPOSES:
        if pattern.match(bare):
            return purpose
    return None


def signed_message(request: SignedRequest) -> str:
    """The string the client must have signed for this request."""
    if request.method in _BODY_METHODS:
        tail = hashlib.sha256(request.body).hexdigest()
    else:
        purpose = purpose_of(request.path)
        if purpose is None:
            raise SignatureRejected("Either payload_str or purpose must be provided")
        tail = purpose
    return f"{request.hotkey}:{request.nonce}:{tail}"


def public_key_of(ss58: str) -> bytes:
    """The 32-byte public key inside an SS58 address (checksum verified)."""
    number = 0
    for char in ss58:
        index = _BASE58.find(char)
        if index < 0:
            raise ValueError("not base58")
        number = number * 58 + index
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(ss58) - len(ss58.lstrip("1"))) + raw
    prefix_length = 1 if raw and raw[0] < 64 else 2
    if len(raw) != prefix_length + 32 + 2:
        raise ValueError("not a 32-byte SS58 address")
    body, checksum = raw[:-2], raw[-2:]
    if hashlib.blake2b(_SS58_PREFIX + body, digest_size=64).digest()[:2] != checksum:
        raise ValueError("bad SS58 checksum")
    return body[prefix_length:]


def ss58_of(public_key: bytes, prefix: int = 42) -> str:
    """The SS58 address of a public key (Substrate generic prefix 42, as Bittensor hotkeys use)."""
    body = bytes([prefix]) + public_key
    raw = body + hashlib.blake2b(_SS58_PREFIX + body, digest_size=64).digest()[:2]
    number = int.from_bytes(raw, "big")
    out = ""
    while number:
        number, rest = divmod(number, 58)
        out = _BASE58[rest] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


REPLAYED = "Replayed request: this signature was already used on this path"


@dataclass(frozen=True)
class Use:
    """One use of a valid signature: what makes it a replay (`digest`) and until when it must be
    remembered (`expires_at`, unix seconds: after it the nonce itself is refused)."""

    digest: bytes
    expires_at: float


class SignatureVerifier:
    def __init__(self, window_seconds: int) -> None:
        self.window = window_seconds

    def verify(self, request: SignedRequest, now: float | None = None) -> Use:
        """Raise SignatureRejected unless `request` is validly and freshly signed by its hotkey;
        the use to record, refused as a replay if it is already recorded."""
        now = time.time() if now is None else now
        # ASCII digits of a plausible length only: str.isdigit() accepts superscripts int()
        # refuses, and int() refuses more than 4,300 digits; both were tracebacks and a 503.
        if not _NONCE.fullmatch(request.nonce) or abs(now - int(request.nonce)) >= self.window:
            raise SignatureRejected("Invalid nonce!")
        message = signed_message(request).encode()
        invalid = f"Invalid request signature for hotkey {request.hotkey[:_MAX_ECHOED]}"
        if not _SIGNATURE.fullmatch(request.signature) or len(request.hotkey) > _MAX_SS58:
            raise SignatureRejected(invalid)
        try:
            signature = bytes.fromhex(request.signature.removeprefix("0x"))
            public_key = public_key_of(request.hotkey)
        except ValueError:
            raise SignatureRejected(invalid) from None
        if len(signature) != 64 or not (
            sr25519.verify(signature, message, public_key)
            # Substrate wallets may sign the message wrapped in <Bytes>...</Bytes>.
            or sr25519.verify(signature, b"<Bytes>" + message + b"</Bytes>", public_key)
        ):
            raise SignatureRejected(invalid)
        # One digest of fixed size per (signature, method, path): the key a replay repeats.
        digest = hashlib.sha256(b"\0".join((signature, request.method.encode(), request.path.encode())))
        return Use(digest.digest(), int(request.nonce) + self.window)
