"""Job tokens: what lets a job's instance report on that job, and on nothing else (spec 5.1).

A job JWT is HS256 with claims `sub` = job_id, `iat`, `iss` = "chutes" and, for an upload URL,
`filename`; it has no expiry (as in the real API): deleting the job is what ends it. The secret
is the setting CHUTES_JOB_TOKEN_SECRET; without it a random secret is made once and kept in
`{data_dir}/job-token-secret` (mode 0600), so restarts keep handed-out tokens valid and a new
data directory invalidates them all. Several jobs processes sharing a data directory share it;
on a cluster set the setting.

File ids are uuid5(UUID(job_id), filename).
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

from services.kit.errors import Unauthenticated
from services.kit.settings import Settings

ISSUER = "chutes"
SECRET_FILE = "job-token-secret"


def file_id_of(job_id: str, filename: str) -> str:
    return str(uuid.uuid5(uuid.UUID(job_id), filename))


def secret_of(settings: Settings) -> str:
    """The token secret (module doc)."""
    if settings.job_token_secret:
        return settings.job_token_secret
    path = settings.data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return _read_when_written(path)
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_hex(32))
    return path.read_text().strip()


def _read_when_written(path: Path) -> str:
    for _ in range(50):
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.02)
    raise RuntimeError(f"{path} stays empty")


@dataclass(frozen=True)
class JobClaims:
    job_id: str
    filename: str | None


class JobTokens:
    def __init__(self, secret: str) -> None:
        self.secret = secret

    def mint(self, job_id: str, filename: str | None = None) -> str:
        claims: dict[str, object] = {"sub": job_id, "iat": int(time.time()), "iss": ISSUER}
        if filename is not None:
            claims["filename"] = filename
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def verify(self, token: str, job_id: str) -> JobClaims:
        """The token's claims if it is a valid job token for `job_id`; 401 otherwise."""
        if not token:
            raise Unauthenticated("Missing or invalid JWT")
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["iat", "iss", "sub"], "verify_exp": False},
            )
        except jwt.PyJWTError:
            raise Unauthenticated("Missing or invalid JWT") from None
        if claims.get("sub") != job_id:
            raise Unauthenticated("Missing or invalid JWT")
        filename = claims.get("filename")
        return JobClaims(job_id=job_id, filename=filename if isinstance(filename, str) else None)
