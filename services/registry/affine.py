"""Which affine chutes the affine subnet may use (spec/chutes-api.md 4.5, GET
/chutes/affine_available): those whose owner holds subnet_admin, or has a positive balance and
is registered on the affine subnet.

The real API joins its users, balances and Bittensor metagraph; here owners come from the
identity service, and "registered on netuid 120" is the owner having a hotkey and netuid 120
among their netuids (this suite has no chain: registrations are data in identity's tables).
"""

from __future__ import annotations

import asyncio
import time

from services.kit.caller import Caller
from services.kit.identity_client import IdentityClient
from services.kit.roles import Role
from services.registry.subnets import INTEGRATED_SUBNETS

AFFINE_NETUID = next(s.netuid for s in INTEGRATED_SUBNETS if s.name == "affine")
#: Owners are asked of identity at most this often (balances move; a few seconds late is fine
#: for a list miners poll).
OWNER_CACHE_SECONDS = 4.0


def available(owner: Caller | None) -> bool:
    if owner is None:
        return False
    registered = bool(owner.hotkey) and AFFINE_NETUID in owner.netuids
    return (owner.balance > 0 and registered) or owner.has_role(Role.SUBNET_ADMIN)


class Owners:
    """Chute owners by user id, asked of identity concurrently and kept briefly."""

    def __init__(self, identity: IdentityClient) -> None:
        self.identity = identity
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def of(self, user_ids: set[str]) -> dict[str, Caller | None]:
        now = time.monotonic()
        fresh = {u: hit[1] for u in user_ids if (hit := self._cache.get(u)) is not None and hit[0] > now}
        missing = sorted(user_ids - fresh.keys())
        for user_id, owner in zip(
            missing, await asyncio.gather(*(self.identity.find_user(u) for u in missing)), strict=True
        ):
            self._cache[user_id] = (now + OWNER_CACHE_SECONDS, owner)
            fresh[user_id] = owner
        return fresh
