"""The identity schema: users, their API keys and scopes, registration tokens.

Migrations (migrations/versions/) are generated from these models; tests/test_migrations.py fails
when the two disagree.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from services.kit.models import CREATED, RANDOM_ID, TEXT, TIMESTAMP, UPDATED, table_of


class IdentityTable(SQLModel, registry=registry()):
    """The base of the identity schema's tables (its own metadata)."""


class User(IdentityTable, table=True):
    __tablename__ = "users"
    # Usernames are unique case-insensitively, as the real API treats them.
    __table_args__ = (sa.Index("users_username_lower", sa.text("lower(username)"), unique=True),)

    #: uuid5(NAMESPACE_OID, blake2b(fingerprint)), as the real API derives it.
    user_id: str = Field(primary_key=True, sa_type=TEXT)
    username: str = Field(sa_type=TEXT)
    hotkey: str | None = Field(default=None, sa_type=TEXT, unique=True)
    coldkey: str | None = Field(default=None, sa_type=TEXT)
    payment_address: str = Field(sa_type=TEXT, sa_column_kwargs={"server_default": ""})
    fingerprint_hash: str | None = Field(default=None, sa_type=TEXT, unique=True)
    permissions_bitmask: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    netuids: list[int] = Field(
        default_factory=list, sa_type=postgresql.ARRAY(sa.Integer), sa_column_kwargs={"server_default": "{}"}
    )
    balance: float = Field(default=0.0, sa_type=sa.Float, sa_column_kwargs={"server_default": "0"})
    created_at: datetime | None = CREATED()
    updated_at: datetime | None = UPDATED()


class ApiKey(IdentityTable, table=True):
    __tablename__ = "api_keys"
    __table_args__ = (sa.UniqueConstraint("user_id", "name", name="api_keys_user_name"),)

    api_key_id: str = Field(primary_key=True, sa_type=TEXT)
    user_id: str = Field(sa_type=TEXT, foreign_key="users.user_id", ondelete="CASCADE")
    name: str = Field(sa_type=TEXT)
    admin: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    #: argon2 hash of the whole key; the plaintext is shown once, at creation.
    key_hash: str = Field(sa_type=TEXT)
    #: Hex sha256 of the whole key: what presentations are compared with. A key's secret has
    #: ~190 bits of entropy, so a fast hash protects it as well as argon2 does, while a wrong
    #: secret then costs a hash rather than argon2's 100+ ms of CPU. None for keys made before
    #: it existed, until they first verify.
    key_digest: str | None = Field(default=None, sa_type=TEXT)
    created_at: datetime | None = CREATED()
    last_used_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)


class ApiKeyScope(IdentityTable, table=True):
    __tablename__ = "api_key_scopes"
    __table_args__ = (sa.Index("api_key_scopes_key", "api_key_id"),)

    scope_id: str = Field(primary_key=True, sa_type=TEXT, sa_column_kwargs={"server_default": RANDOM_ID})
    api_key_id: str = Field(sa_type=TEXT, foreign_key="api_keys.api_key_id", ondelete="CASCADE")
    #: `images`, `chutes` or `invocations`.
    object_type: str = Field(sa_type=TEXT)
    #: One object of that type; None for all of them.
    object_id: str | None = Field(default=None, sa_type=TEXT)
    #: `read`, `write`, `delete` or `invoke`; None for every action.
    action: str | None = Field(default=None, sa_type=TEXT)


class RegistrationToken(IdentityTable, table=True):
    """A one-use token from `chutes-suite admin create-token`, needed to register when
    registration is closed (CHUTES_OPEN_REGISTRATION=false)."""

    __tablename__ = "registration_tokens"

    token: str = Field(primary_key=True, sa_type=TEXT)
    created_at: datetime | None = CREATED()
    used_by: str | None = Field(default=None, sa_type=TEXT, foreign_key="users.user_id", ondelete="SET NULL")


class SignatureUse(IdentityTable, table=True):
    """A hotkey signature already used, kept until its nonce leaves the window: an exact replay
    is refused by whichever identity replica sees it (issue 17), so this is shared, not memory."""

    __tablename__ = "signature_uses"
    __table_args__ = (sa.Index("signature_uses_expires_at", "expires_at"),)

    #: sha256 of the signature bytes, the method and the path (services/identity/signatures.py).
    digest: bytes = Field(primary_key=True, sa_type=sa.LargeBinary)
    #: When the nonce it was signed with stops being accepted: the row is useless after that.
    expires_at: datetime = Field(sa_type=TIMESTAMP)


metadata = IdentityTable.metadata
users = table_of(User)
api_keys = table_of(ApiKey)
api_key_scopes = table_of(ApiKeyScope)
registration_tokens = table_of(RegistrationToken)
signature_uses = table_of(SignatureUse)
