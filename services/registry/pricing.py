"""What a chute costs (the real API's ChuteResponse price fields and its compute multiplier):
the node selector's hourly price, per-token and per-step prices, and the multiplier's factors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from chutes.chute import NodeSelector
from services.registry.bounties import boost as bounty_boost
from services.registry.subnets import subnet_of

#: The platform's own account: its chutes are never billed as private ones.
SYSTEM_USERNAME = "chutes"
#: Private chutes created before this moment keep the legacy (preemptible) billing.
LEGACY_BILLING_BEFORE = datetime(2025, 9, 10, 16, 0, tzinfo=UTC)
#: Multiplier factors of the real API's effective compute multiplier.
PRIVATE_FACTOR, INTEGRATED_SUBNET_FACTOR, TEE_FACTOR = 2.0, 3.0, 2.25


class Priced(Protocol):
    """What pricing reads of a node selector (a NodeSelector, or its `Selector`)."""

    @property
    def compute_multiplier(self) -> float: ...
    @property
    def hourly_price_usd(self) -> float: ...
    @property
    def price_range_usd(self) -> tuple[float, float]: ...


@dataclass(frozen=True)
class Selector:
    """A stored node selector's numbers, worked out once per distinct selector (`selector_of`):
    a NodeSelector is a pydantic model whose properties walk the GPU catalog on every read, ~60 µs
    per answer built (issue 14). Shared: never mutate `stored` or `supported_gpus`."""

    stored: dict[str, Any]
    supported_gpus: list[str]
    compute_multiplier: float
    hourly_price_usd: float
    price_range_usd: tuple[float, float]


_SELECTORS: dict[bytes, Selector] = {}
#: Distinct selectors remembered (chutes share few: a GPU count, a VRAM floor, a few lists).
_SELECTORS_KEPT = 4096


def selector_of(stored: Mapping[str, Any]) -> Selector:
    """The numbers of a chute's stored node selector (as NodeSelector computes them; a selector
    no GPU matches raises as NodeSelector does)."""
    key = orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)
    found = _SELECTORS.get(key)
    if found is None:
        selector = NodeSelector(**stored)
        found = Selector(
            stored=selector.stored(),
            supported_gpus=selector.supported_gpus,
            compute_multiplier=selector.compute_multiplier,
            hourly_price_usd=selector.hourly_price_usd,
            price_range_usd=selector.price_range_usd,
        )
        if len(_SELECTORS) >= _SELECTORS_KEPT:
            _SELECTORS.clear()
        _SELECTORS[key] = found
    return found


def is_affine(name: str) -> bool:
    return "affine" in name.lower()


def legacy_billing(row: Mapping[str, Any]) -> bool:
    """Private, non-affine chutes from before the billing change keep preemptible billing."""
    return not row["public"] and row["created_at"] < LEGACY_BILLING_BEFORE and not is_affine(row["name"])


def multiplier_factors(row: Mapping[str, Any], selector: Priced) -> dict[str, float]:
    """The factors of the effective compute multiplier that the chute's row decides (cached with
    its response); `live_factors` adds the manual boost and the bounty's at read time."""
    factors = {"base": selector.compute_multiplier}
    if not row["public"] and not legacy_billing(row) and row["username"] != SYSTEM_USERNAME:
        if subnet_of(row["name"]) is not None:
            factors["integrated_subnet"] = INTEGRATED_SUBNET_FACTOR
        else:
            factors["private"] = PRIVATE_FACTOR
    boost = row["boost"]
    if boost is not None and 0 < boost <= 20:
        factors["urgency_boost"] = boost
    if row["tee"]:
        factors["tee"] = TEE_FACTOR
    return factors


def live_factors(manual_boost: float | None, bounty_age: float | None) -> dict[str, float]:
    """The factors that change without a write to the chute: a billing admin's manual boost
    (kept within (0, 20], counted when not 1.0) and the live bounty's boost."""
    factors = {}
    if manual_boost is not None and 0 < manual_boost <= 20 and manual_boost != 1.0:
        factors["manual_boost"] = manual_boost
    if bounty_age is not None and (boost := bounty_boost(bounty_age)) > 1:
        factors["bounty_boost"] = boost
    return factors


def estimated_price(row: Mapping[str, Any], selector: Priced, tao_usd: float | None) -> dict[str, Any]:
    """`current_estimated_price`: the node selector's hourly cost, per-token prices for
    vLLM, per-step for diffusion, and the hourly range of a private chute."""
    discount = row["discount"] or 0.0
    hourly = selector.hourly_price_usd * (1 - discount)

    def money(usd: float) -> dict[str, float]:
        return {"usd": usd, "tao": usd / tao_usd} if tao_usd else {"usd": usd}

    price: dict[str, Any] = {"usd": {"hour": hourly, "second": hourly / 3600}}
    if tao_usd:
        price["tao"] = {"hour": hourly / tao_usd, "second": hourly / 3600 / tao_usd}
    template = row["standard_template"]
    if template == "vllm":
        concurrency = row["concurrency"] or 16
        scale = 16 / concurrency if concurrency < 16 else 1.0
        per_in = round(max(hourly * 0.01358695 * scale, 0.01), 2)
        per_out = round(max(hourly * 0.05434782 * scale, 0.01), 2)
        price["per_million_tokens"] = {
            "input": money(per_in),
            "output": money(per_out),
            "input_cache_read": money(round(per_in * 0.5, 2)),
        }  # fmt: skip
    elif template == "diffusion":
        price["per_step"] = money(selector.hourly_price_usd * 0.005 * (1 - discount))
    if not row["public"]:
        low, high = selector.price_range_usd
        price["hourly_price_range"] = {"usd": {"min": low, "max": high}}
    return price
