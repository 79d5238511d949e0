"""Request authentication: the published CLI's hotkey signatures, or an API key.

Hotkey signing is byte-for-byte the one of `chutes` 0.6.9 (official-client-wire.md 2): headers
`X-Chutes-UserID`, `X-Chutes-Hotkey`, `X-Chutes-Nonce`, `Content-Type` (only with a body) and
`X-Chutes-Signature`, in that order; the signature is sr25519 over `"{ss58}:{nonce}:{tail}"` where
the tail is the hex sha256 of the exact body bytes, or the route's purpose word for bodiless
requests. The SS58 address is taken from the config as-is and not derived from the seed, like
the real client: a mismatch shows up as the server refusing the signature.
"""

from __future__ import annotations

import hashlib
import time

import sr25519

from chutes.config import Config, ConfigError, load_config

USER_ID_HEADER = "X-Chutes-UserID"
HOTKEY_HEADER = "X-Chutes-Hotkey"
NONCE_HEADER = "X-Chutes-Nonce"
SIGNATURE_HEADER = "X-Chutes-Signature"
AUTHORIZATION_HEADER = "Authorization"


def _keypair(seed_hex: str) -> tuple[bytes, bytes]:
    try:
        seed = bytes.fromhex(seed_hex.removeprefix("0x"))
    except ValueError:
        raise ConfigError("[auth] hotkey_seed is not hex") from None
    if len(seed) != 32:
        # A derivation URI such as //Alice has no seed; the client needs the 32-byte mini-secret.
        raise ConfigError(f"[auth] hotkey_seed must be 32 bytes of hex, got {len(seed)} bytes")
    public, private = sr25519.pair_from_seed(seed)
    return public, private


def sign_request(
    payload: bytes | None = None, purpose: str | None = None, *, config: Config | None = None
) -> dict[str, str]:
    """Hotkey-signature headers for a request with body `payload` (sent byte-for-byte as signed)
    or, for a bodiless request, the route's `purpose` word (`chutes`, `images`, `api_keys`, ...)."""
    config = config or load_config()
    if payload is None and purpose is None:
        raise ValueError("either payload or purpose must be given")
    seed, hotkey = config.hotkey_seed, config.hotkey_ss58address
    if not seed or not hotkey:
        raise ConfigError(
            "no credentials: set CHUTES_API_KEY (or [auth] api_key), or [auth] hotkey_seed and "
            f"hotkey_ss58address in {config.path}"
        )
    nonce = str(int(time.time()))
    tail = hashlib.sha256(payload).hexdigest() if payload is not None else str(purpose)
    headers = {
        # The real API never reads the user id (identity comes from the hotkey); sent for parity.
        USER_ID_HEADER: config.user_id or "",
        HOTKEY_HEADER: hotkey,
        NONCE_HEADER: nonce,
    }
    if payload is not None:
        headers["Content-Type"] = "application/json"
    message = f"{hotkey}:{nonce}:{tail}".encode()
    headers[SIGNATURE_HEADER] = sr25519.sign(_keypair(seed), message).hex()
    return headers


def auth_headers(config: Config, payload: bytes | None = None, purpose: str | None = None) -> dict[str, str]:
    """Headers proving who calls: the API key when one is configured, else a hotkey signature."""
    if config.api_key:
        headers = {AUTHORIZATION_HEADER: config.api_key}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return headers
    return sign_request(payload, purpose, config=config)
