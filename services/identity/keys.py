"""API keys: `cpk_<key id hex32>.<user id hex32>.<secret 32 alnum>`, stored only as argon2 hashes.

argon2 is deliberately slow (tens of milliseconds), so it runs once per key per process: after a
key verifies, the sha256 of the whole key is remembered and later presentations compare against
that. Deleting a key forgets it here; other processes learn of a deletion through the database
row being gone (checked on every lookup, a cheap indexed read).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import uuid
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

KEY_PATTERN = re.compile(r"^cpk_([a-f0-9]{32})\.([a-f0-9]{32})\.([a-zA-Z0-9]{32})$")
_ALPHABET = string.ascii_letters + string.digits
_hasher = PasswordHasher()


@dataclass(frozen=True)
class ParsedKey:
    key: str
    api_key_id: str  # dashed UUID, as stored
    user_id: str  # dashed UUID, as stored


def token_of(authorization: str) -> str:
    """The credential in an Authorization value: its last whitespace-separated piece, so a bare
    key, `Bearer <key>` and `Basic <key>` (what the published CLI advertises) all work."""
    pieces = authorization.split()
    return pieces[-1] if pieces else ""


def parse(token: str) -> ParsedKey | None:
    """The ids inside a well-formed key, or None."""
    match = KEY_PATTERN.match(token)
    if match is None:
        return None
    return ParsedKey(token, str(uuid.UUID(match.group(1))), str(uuid.UUID(match.group(2))))


def new_key(user_id: str) -> tuple[ParsedKey, str]:
    """A fresh key for `user_id` and the argon2 hash to store. The plaintext is shown once."""
    api_key_id = str(uuid.uuid4())
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    key = f"cpk_{uuid.UUID(api_key_id).hex}.{uuid.UUID(user_id).hex}.{secret}"
    return ParsedKey(key, api_key_id, user_id), _hasher.hash(key)


class VerifiedKeys:
    """Which keys have passed argon2 in this process, by id: the sha256 of the whole key."""

    def __init__(self) -> None:
        self._digests: dict[str, bytes] = {}

    def verify(self, key: ParsedKey, key_hash: str) -> bool:
        digest = hashlib.sha256(key.key.encode()).digest()
        known = self._digests.get(key.api_key_id)
        if known is not None:
            return hmac.compare_digest(known, digest)
        try:
            _hasher.verify(key_hash, key.key)
        except (VerificationError, InvalidHashError):
            return False
        self._digests[key.api_key_id] = digest
        return True

    def forget(self, api_key_id: str) -> None:
        self._digests.pop(api_key_id, None)
