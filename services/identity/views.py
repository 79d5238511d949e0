"""Rows of the identity schema to protobuf messages."""

from __future__ import annotations

from typing import Any

from chutes.identity.v1 import identity_pb2
from services.identity.store import ApiKeyRow
from services.kit.caller import scope_to_proto
from services.kit.messages import timestamp
from services.kit.roles import role_names


def api_key_message(row: ApiKeyRow) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        api_key_id=row.api_key_id,
        user_id=row.user_id,
        name=row.name,
        admin=row.admin,
        scopes=[scope_to_proto(s) for s in row.scopes],
        created_at=timestamp(row.created_at),
        last_used_at=timestamp(row.last_used_at),
    )


def new_api_key_message(row: ApiKeyRow, secret: str) -> identity_pb2.ApiKeyWithSecret:
    """A key just created: the only answer that carries its secret."""
    return identity_pb2.ApiKeyWithSecret(
        api_key_id=row.api_key_id,
        user_id=row.user_id,
        name=row.name,
        admin=row.admin,
        scopes=[scope_to_proto(s) for s in row.scopes],
        created_at=timestamp(row.created_at),
        secret_key=secret,
    )


def user_message(row: Any) -> identity_pb2.User:
    return identity_pb2.User(
        user_id=row.user_id,
        username=row.username,
        hotkey=row.hotkey,
        coldkey=row.coldkey,
        permissions_bitmask=row.permissions_bitmask,
        permissions=role_names(row.permissions_bitmask),
        netuids=row.netuids,
        balance=row.balance,
        payment_address=row.payment_address,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )
