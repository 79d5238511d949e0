"""Every query of the identity service (SQLAlchemy Core on the models' tables: these sit on the
authentication path).

Shared by the servicer and the operator commands (`chutes-suite admin ...`), which write users
and keys straight into the database.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sr25519
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.identity import keys
from services.identity.models import api_key_scopes, api_keys, registration_tokens, users
from services.identity.signatures import Use, ss58_of
from services.kit.caller import Caller, Scope
from services.kit.errors import AlreadyExists

_ALPHANUMERIC = string.ascii_letters + string.digits


@dataclass(frozen=True)
class NewUser:
    user_id: str
    username: str
    payment_address: str
    #: Shown once, at registration (the real API's account fingerprint); only its hash is kept.
    fingerprint: str


@dataclass(frozen=True)
class ApiKeyRow:
    api_key_id: str
    user_id: str
    name: str
    admin: bool
    scopes: tuple[Scope, ...]
    created_at: datetime
    last_used_at: datetime | None


async def create_user(
    connection: AsyncConnection,
    username: str,
    *,
    hotkey: str | None = None,
    coldkey: str | None = None,
    permissions_bitmask: int = 0,
    netuids: Sequence[int] = (),
    balance: float = 0.0,
) -> NewUser:
    """Insert a user. 409 when the username (any case) or the hotkey is taken."""
    fingerprint = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(32))
    fingerprint_hash = hashlib.blake2b(fingerprint.encode()).hexdigest()
    user_id = str(uuid.uuid5(uuid.NAMESPACE_OID, fingerprint_hash))  # as the real API derives it
    # A deposit address of the user's own; no chain here, so it only identifies the account.
    payment_address = ss58_of(sr25519.pair_from_seed(secrets.token_bytes(32))[0])
    clash = sa.func.lower(users.c.username) == username.lower()
    if hotkey is not None:  # users without a hotkey never clash on it
        clash = sa.or_(clash, users.c.hotkey == hotkey)
    taken = await connection.execute(sa.select(users.c.username, users.c.hotkey).where(clash))
    for row in taken:
        if row.username.lower() == username.lower():
            raise AlreadyExists(f"Username {username} is already taken")
        raise AlreadyExists(f"Hotkey {hotkey} is already registered")
    try:
        await connection.execute(
            users.insert().values(
                user_id=user_id,
                username=username,
                hotkey=hotkey,
                coldkey=coldkey,
                payment_address=payment_address,
                fingerprint_hash=fingerprint_hash,
                permissions_bitmask=permissions_bitmask,
                netuids=list(netuids),
                balance=balance,
                created_at=sa.func.now(),
                updated_at=sa.func.now(),
            )
        )
    except IntegrityError:  # a concurrent registration won the race
        raise AlreadyExists(f"Username {username} or hotkey {hotkey} is already registered") from None
    return NewUser(user_id, username, payment_address, fingerprint)


async def create_api_key(
    connection: AsyncConnection, user_id: str, name: str, *, admin: bool = True, scopes: Sequence[Scope] = ()
) -> tuple[str, ApiKeyRow]:
    """Insert a key; returns its plaintext (shown once) and its row. 409 on a duplicate name."""
    parsed, key_hash, key_digest = keys.new_key(user_id)
    try:
        async with connection.begin_nested():
            created_at = (
                await connection.execute(
                    api_keys.insert()
                    .values(
                        api_key_id=parsed.api_key_id,
                        user_id=user_id,
                        name=name,
                        admin=admin,
                        key_hash=key_hash,
                        key_digest=key_digest,
                        created_at=sa.func.now(),
                    )
                    .returning(api_keys.c.created_at)
                )
            ).scalar_one()
    except IntegrityError:
        raise AlreadyExists(f"You already have an API key named {name!r}") from None
    unique = list(dict.fromkeys(scopes))  # the published CLI sends some scopes twice
    if unique and not admin:
        await connection.execute(
            api_key_scopes.insert(),
            [
                {
                    "scope_id": str(uuid.uuid4()),
                    "api_key_id": parsed.api_key_id,
                    "object_type": s.object_type,
                    "object_id": s.object_id,
                    "action": s.action,
                }
                for s in unique
            ],
        )
    row = ApiKeyRow(
        parsed.api_key_id, user_id, name, admin, tuple(unique) if not admin else (), created_at, None
    )
    return parsed.key, row


async def _scopes_of(connection: AsyncConnection, key_ids: Sequence[str]) -> dict[str, tuple[Scope, ...]]:
    found: dict[str, list[Scope]] = {key_id: [] for key_id in key_ids}
    if key_ids:
        rows = await connection.execute(
            sa.select(api_key_scopes)
            .where(api_key_scopes.c.api_key_id.in_(key_ids))
            .order_by(api_key_scopes.c.scope_id)
        )
        for row in rows:
            found[row.api_key_id].append(Scope(row.object_type, row.object_id, row.action))
    return {key_id: tuple(scopes) for key_id, scopes in found.items()}


async def list_api_keys(
    connection: AsyncConnection, user_id: str, *, limit: int, offset: int
) -> tuple[int, list[ApiKeyRow]]:
    total = (
        await connection.execute(
            sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.user_id == user_id)
        )
    ).scalar_one()
    rows = (
        await connection.execute(
            sa.select(api_keys)
            .where(api_keys.c.user_id == user_id)
            .order_by(api_keys.c.created_at, api_keys.c.api_key_id)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    scopes = await _scopes_of(connection, [row.api_key_id for row in rows])
    return total, [
        ApiKeyRow(
            r.api_key_id, r.user_id, r.name, r.admin, scopes[r.api_key_id], r.created_at, r.last_used_at
        )
        for r in rows
    ]


async def get_api_key(connection: AsyncConnection, user_id: str, api_key_id: str) -> ApiKeyRow | None:
    row = (
        await connection.execute(
            sa.select(api_keys).where(api_keys.c.api_key_id == api_key_id, api_keys.c.user_id == user_id)
        )
    ).one_or_none()
    if row is None:
        return None
    scopes = await _scopes_of(connection, [api_key_id])
    return ApiKeyRow(
        row.api_key_id, row.user_id, row.name, row.admin, scopes[api_key_id], row.created_at, row.last_used_at
    )


async def delete_api_key(connection: AsyncConnection, user_id: str, api_key_id: str) -> bool:
    deleted = await connection.execute(
        api_keys.delete().where(api_keys.c.api_key_id == api_key_id, api_keys.c.user_id == user_id)
    )
    return deleted.rowcount > 0


def _caller_of(row: sa.Row[tuple[object, ...]], **extra: object) -> Caller:
    return Caller(
        user_id=row.user_id,
        username=row.username,
        permissions_bitmask=row.permissions_bitmask,
        netuids=tuple(row.netuids),
        balance=row.balance,
        hotkey=row.hotkey or "",
        **extra,  # type: ignore[arg-type]
    )


async def caller_by_user_id(connection: AsyncConnection, user_id: str) -> Caller | None:
    row = (await connection.execute(sa.select(users).where(users.c.user_id == user_id))).one_or_none()
    return None if row is None else _caller_of(row)


async def find_caller(connection: AsyncConnection, user_id_or_name: str) -> Caller | None:
    row = (
        await connection.execute(
            sa.select(users)
            .where(
                sa.or_(
                    users.c.user_id == user_id_or_name,
                    sa.func.lower(users.c.username) == user_id_or_name.lower(),
                )
            )
            .limit(1)
        )
    ).one_or_none()
    return None if row is None else _caller_of(row)


async def user_id_by_hotkey(connection: AsyncConnection, hotkey: str) -> str | None:
    found: str | None = (
        await connection.execute(sa.select(users.c.user_id).where(users.c.hotkey == hotkey))
    ).scalar_one_or_none()
    return found


@dataclass(frozen=True)
class StoredKey:
    key_hash: str  # argon2
    key_digest: str | None  # sha256 hex; None for keys made before digests
    caller: Caller


async def key_for_authentication(connection: AsyncConnection, parsed: keys.ParsedKey) -> StoredKey | None:
    """What is stored of a key and the caller it stands for, or None when there is no such key."""
    row = (
        await connection.execute(
            sa.select(api_keys.c.key_hash, api_keys.c.key_digest, api_keys.c.admin, users)
            .join(users, users.c.user_id == api_keys.c.user_id)
            .where(api_keys.c.api_key_id == parsed.api_key_id, api_keys.c.user_id == parsed.user_id)
        )
    ).one_or_none()
    if row is None:
        return None
    scopes = () if row.admin else (await _scopes_of(connection, [parsed.api_key_id]))[parsed.api_key_id]
    caller = _caller_of(
        row, admin=row.admin, scopes=scopes, auth_method="api_key", api_key_id=parsed.api_key_id
    )
    return StoredKey(row.key_hash, row.key_digest, caller)


async def store_key_digest(connection: AsyncConnection, api_key_id: str, key_digest: str) -> None:
    """Remember the digest of a key made before digests, once argon2 verified it."""
    await connection.execute(
        api_keys.update()
        .where(api_keys.c.api_key_id == api_key_id, api_keys.c.key_digest.is_(None))
        .values(key_digest=key_digest)
    )


async def get_user(connection: AsyncConnection, user_id: str) -> sa.Row[tuple[object, ...]] | None:
    return (await connection.execute(sa.select(users).where(users.c.user_id == user_id))).one_or_none()


async def find_user(connection: AsyncConnection, username: str) -> sa.Row[tuple[object, ...]] | None:
    return (
        await connection.execute(sa.select(users).where(sa.func.lower(users.c.username) == username.lower()))
    ).one_or_none()


async def add_registration_token(connection: AsyncConnection, token: str) -> None:
    await connection.execute(registration_tokens.insert().values(token=token))


async def use_registration_token(connection: AsyncConnection, token: str, user_id: str) -> bool:
    """Mark an operator-issued token used by `user_id`; False if unknown or already used."""
    used = await connection.execute(
        registration_tokens.update()
        .where(registration_tokens.c.token == token, registration_tokens.c.used_by.is_(None))
        .values(used_by=user_id)
    )
    return used.rowcount > 0


#: One statement per signed request: the use is recorded unless it already is (a replay). The
#: digest is the primary key, so two replicas seeing one signature at once cannot both insert it.
_FIRST_USE = """
INSERT INTO signature_uses (digest, expires_at) VALUES ($1, to_timestamp($2))
ON CONFLICT (digest) DO NOTHING RETURNING true
"""
#: The same, with the expired rows deleted in the same statement (every replica does so now and
#: then: by the index on expires_at, a range delete of what expired since the last sweep).
_FIRST_USE_SWEEPING = (
    "WITH expired AS (DELETE FROM signature_uses WHERE expires_at < now()) " + _FIRST_USE.strip()
)


async def first_use(connection: Any, use: Use, *, sweep: bool = False) -> bool:
    """Record `use` (asyncpg connection); False when it was recorded before: a replay. An expired
    row can never hide a valid use: the same signature with an expired nonce is refused before."""
    found = await connection.fetchval(
        _FIRST_USE_SWEEPING if sweep else _FIRST_USE, use.digest, use.expires_at
    )
    return found is True
