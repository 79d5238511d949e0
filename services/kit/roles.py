"""User roles: the bits of `users.permissions_bitmask` (spec/chutes-api.md 2.5)."""

from __future__ import annotations

from enum import IntFlag


class Role(IntFlag):
    DEVELOPER = 1 << 0
    CREATE_USER = 1 << 1
    UPDATE_USER = 1 << 2
    DELETE_USER = 1 << 3
    FREE_ACCOUNT = 1 << 4
    UNLIMITED = 1 << 5
    BILLING_ADMIN = 1 << 6
    UNLIMITED_DEV = 1 << 7
    INVOICE_BILLING = 1 << 8
    STAKE_WEIGHT_QUOTA = 1 << 9
    SUBNET_ADMIN = 1 << 10
    PUBLIC_MODEL_DEPLOYMENT = 1 << 11
    SUBNET_INVOKE = 1 << 12
    SUBNET_ADMIN_ASSIGN = 1 << 13
    CHUTES_SUPPORT = 1 << 14
    #: Ours, not the real API's (its miners are Bittensor hotkeys on the metagraph): the users
    #: whose credentials may register nodes and run instances (chutes.registry.v1.MinerService).
    MINER = 1 << 30

    @classmethod
    def parse(cls, name: str) -> Role:
        """`public_model_deployment` (or `PUBLIC-MODEL-DEPLOYMENT`) as a Role."""
        try:
            return cls[name.strip().upper().replace("-", "_")]
        except KeyError:
            known = ", ".join(r.name.lower() for r in cls if r.name)
            raise ValueError(f"unknown role {name!r}; known roles: {known}") from None


def role_names(bitmask: int) -> list[str]:
    """The names of the roles set in `bitmask`, lowest bit first."""
    return [role.name.lower() for role in Role if role.name and bitmask & role == role]


def has_role(bitmask: int, role: Role) -> bool:
    return bitmask & role == role
