"""API keys: `cpk_<key id hex32>.<user id hex32>.<secret 32 alnum>`, stored as a sha256 digest
(what presentations are compared with) and an argon2 hash.

A key's secret has ~190 bits of entropy, so its sha256 cannot be reversed or guessed any more
than the argon2 hash can, and comparing digests makes a wrong secret cost a hash: with argon2
alone, every wrong secret on a real key id cost ~190 ms of CPU, and an anonymous client could
burn a core with 5 requests a second (issue 16). Keys made before digests existed verify with
argon2 once, which stores their digest; meanwhile a key id's failed argon2 verifications are
remembered briefly, so the same wrong key never costs argon2 twice in a row. Deleting a key
forgets it here; other processes learn of a deletion through the database row being gone
(checked on every lookup, a cheap indexed read).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
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


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(user_id: str) -> tuple[ParsedKey, str, str]:
    """A fresh key for `user_id`, its argon2 hash and its digest to store. The plaintext is
    shown once."""
    api_key_id = str(uuid.uuid4())
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    key = f"cpk_{uuid.UUID(api_key_id).hex}.{uuid.UUID(user_id).hex}.{secret}"
    return ParsedKey(key, api_key_id, user_id), _hasher.hash(key), digest_of(key)


#: How long a key's failed argon2 verification is remembered (a legacy key without a digest).
FAILURE_SECONDS = 60.0
_MAX_FAILURES = 10_000


class VerifiedKeys:
    """Compares presented keys with stored digests; argon2 only for keys without one."""

    def __init__(self) -> None:
        self._failures: dict[str, float] = {}  # digest of a wrong key -> until when it is known

    @staticmethod
    def matches_digest(key: ParsedKey, key_digest: str) -> bool:
        return hmac.compare_digest(digest_of(key.key), key_digest)

    def verify_legacy(self, key: ParsedKey, key_hash: str) -> bool:
        """argon2 (~100 ms of CPU: call it off the event loop), for a key stored without a digest;
        the caller stores the digest when this says yes."""
        digest = digest_of(key.key)
        now = time.monotonic()
        if self._failures.get(digest, 0.0) > now:
            return False
        try:
            _hasher.verify(key_hash, key.key)
        except (VerificationError, InvalidHashError):
            if len(self._failures) >= _MAX_FAILURES:
                self._failures.clear()
            self._failures[digest] = now + FAILURE_SECONDS
            return False
        return True
