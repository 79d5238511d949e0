"""Integrated subnets (spec/chutes-api.md 2.6): chutes whose name contains a subnet's substring
belong to that subnet; its admins may manage them. Configuration (`CHUTES_INTEGRATED_SUBNETS`),
not a chain lookup."""

from __future__ import annotations

import json
from dataclasses import dataclass

from services.kit.caller import Caller
from services.kit.roles import Role
from services.kit.settings import get_settings


@dataclass(frozen=True)
class Subnet:
    name: str
    netuid: int
    substring: str
    #: How many public copies (POST /chutes/make_public) the subnet may have.
    max_public_chutes: int = 3


#: The real API's list (its newest constants).
DEFAULT_SUBNETS = (
    Subnet("affine", 120, "affine"),
    Subnet("babelbit", 59, "babelbit"),
    Subnet("chronoseek", 20, "chronoseek"),
    Subnet("glyph", 117, "glyph"),
    Subnet("leoma", 99, "leoma"),
    Subnet("score", 44, "turbovision"),
    Subnet("vocence", 78, "vocence"),
)


def configured(text: str | None) -> tuple[Subnet, ...]:
    """The operator's subnets: `CHUTES_INTEGRATED_SUBNETS`, a JSON list of {name, netuid,
    substring[, max_public_chutes]} that replaces the defaults; unset: the defaults."""
    if not text:
        return DEFAULT_SUBNETS
    return tuple(Subnet(**entry) for entry in json.loads(text))


#: Read once per process, like every setting.
INTEGRATED_SUBNETS = configured(get_settings().integrated_subnets)


def subnet_of(chute_name: str) -> Subnet | None:
    lowered = chute_name.lower()
    return next((s for s in INTEGRATED_SUBNETS if s.substring in lowered), None)


def substrings_managed_by(caller: Caller | None, *, admin_only: bool) -> list[str]:
    """The name substrings of the subnets whose chutes `caller` may reach through a subnet role:
    subnet_admin on one of its netuids, or (when not admin_only) subnet_invoke."""
    if caller is None:
        return []
    allowed = caller.has_role(Role.SUBNET_ADMIN) or (not admin_only and caller.has_role(Role.SUBNET_INVOKE))
    if not allowed:
        return []
    return [s.substring for s in INTEGRATED_SUBNETS if s.netuid in caller.netuids]
