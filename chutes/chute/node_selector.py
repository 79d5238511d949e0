"""`NodeSelector`: which GPUs (how many, how large, how costly) a chute's instances run on.

One model serves both sides: chute files build it through the SDK (`from chutes.chute import
NodeSelector`) and `.dict()` it into the deploy body; the services validate that body with it, store
`stored()`, and derive the supported GPUs, compute multiplier and prices from it. Rules follow the
Chutes API (spec `chutes-api.md` §8.1), with the GPU numbers of `chutes.gpu`.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import functools
import warnings
from collections.abc import Iterator
from typing import Any, Final

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from chutes.gpu import GPUS, MAX_GPU_PRICE_DELTA, Gpu, compute_multiplier

# Keys the API adds when it returns a selector; dropped on input so a returned selector posts back.
_COMPUTED_KEYS: Final = ("compute_multiplier", "supported_gpus")

# The keys the SDK sends at deploy, in the SDK's field order (`dynamic` is API-side only).
_SDK_KEYS: Final = ("gpu_count", "min_vram_gb_per_gpu", "max_hourly_price_per_gpu", "include", "exclude")

# Always kept by the price-delta rule: the API exempts it so that cheap selectors still reach it.
_PRICE_DELTA_EXEMPT: Final = "pro_6000"

# AMD GPUs need different images than NVIDIA ones, so a selector cannot mix them.
_AMD_GPU: Final = "mi300x"

# `dict` is shadowed by the method below inside the class body, so annotations use this alias.
_Dict = builtins.dict

# While a chute file is imported (`chutes run`, `chutes deploy`), a GPU name outside the catalogue
# is a warning, not an error: the published SDK takes any name, and a file written for it must at
# least load and run locally. The platform still refuses it at deploy (the services validate the
# body strictly, which is the default).
_LENIENT_GPU_NAMES: contextvars.ContextVar[bool] = contextvars.ContextVar("lenient_gpu_names", default=False)


@contextlib.contextmanager
def lenient_gpu_names() -> Iterator[None]:
    """Within the block, unknown GPU names in include/exclude warn instead of failing validation."""
    token = _LENIENT_GPU_NAMES.set(True)
    try:
        yield
    finally:
        _LENIENT_GPU_NAMES.reset(token)


@functools.lru_cache(maxsize=1024)
def _supported_keys(
    include: tuple[str, ...], exclude: tuple[str, ...], min_vram_gb: int, max_hourly_price: float | None
) -> tuple[str, ...]:
    """The supported GPUs of a selector (spec 8.1). Memoised: chutes share a handful of selectors,
    and every chute response needs this several times."""
    # Empty include/exclude lists count as not given, as in the API (it tests truthiness).
    # Unknown names (accepted from chute files, see lenient_gpu_names) match no GPU.
    candidates = set(include) & set(GPUS) if include else set(GPUS)
    candidates -= set(exclude)
    candidates = {key for key in candidates if GPUS[key].vram_gb >= min_vram_gb}
    if max_hourly_price is not None:
        candidates = {key for key in candidates if GPUS[key].hourly_rate <= max_hourly_price}
    if not include and candidates:
        # Without an explicit list, don't let a cheap GPU drag in far costlier classes (a 3090
        # selector should not also match b200s).
        ceiling = min(GPUS[key].hourly_rate for key in candidates) * MAX_GPU_PRICE_DELTA
        candidates = {
            key for key in candidates if GPUS[key].hourly_rate <= ceiling or key == _PRICE_DELTA_EXEMPT
        }
    if _AMD_GPU in candidates and len(candidates) > 1:
        candidates.discard(_AMD_GPU)
    return tuple(sorted(candidates, key=lambda key: (GPUS[key].hourly_rate, key)))


class NodeSelector(BaseModel):
    """GPU requirements of a chute; unknown input keys are ignored."""

    gpu_count: int = Field(default=1, ge=1, le=8)
    min_vram_gb_per_gpu: int = Field(default=16, ge=16, le=140)
    max_hourly_price_per_gpu: float | None = Field(default=None, gt=0, lt=10)
    include: list[str] | None = None
    exclude: list[str] | None = None
    dynamic: bool = False

    # include/exclude as given, for the deploy body: the published SDK sends the names unchanged
    # (case included), and the body must be byte-identical to it.
    _given: _Dict[str, list[str] | None] = PrivateAttr(default_factory=_Dict)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_given_names(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        selector = handler(data)
        if isinstance(selector, NodeSelector) and isinstance(data, _Dict):
            for key in ("include", "exclude"):
                given = data.get(key)
                if isinstance(given, list) and all(isinstance(name, str) for name in given):
                    selector._given[key] = list(given)
        return selector

    @model_validator(mode="before")
    @classmethod
    def _drop_computed_keys(cls, data: Any) -> Any:
        # Extra keys are ignored anyway; dropping these explicitly documents the round trip and keeps
        # it working should the model ever forbid extras.
        if isinstance(data, _Dict):
            return {key: value for key, value in data.items() if key not in _COMPUTED_KEYS}
        return data

    @field_validator("include", "exclude")
    @classmethod
    def _known_gpus(cls, gpus: list[str] | None) -> list[str] | None:
        # Stored lower-cased: the real API checks the lower-cased key but keeps the raw string, which
        # later crashes the catalog lookup for e.g. "H100"; normalising here avoids that.
        if gpus is None:
            return None
        lowered = [gpu.lower() for gpu in gpus]
        unknown = sorted({gpu for gpu in lowered if gpu not in GPUS})
        if unknown:
            valid = ", ".join(sorted(GPUS))
            message = f"unknown GPU key(s) {', '.join(unknown)}; valid keys: {valid}"
            if not _LENIENT_GPU_NAMES.get():
                raise ValueError(message)
            warnings.warn(f"NodeSelector: {message} (the platform refuses the chute at deploy)", stacklevel=2)
        return lowered

    @property
    def supported_gpus(self) -> list[str]:
        """Keys of the GPUs this selector accepts, cheapest first (ties by key)."""
        return list(
            _supported_keys(
                tuple(self.include or ()),
                tuple(self.exclude or ()),
                self.min_vram_gb_per_gpu,
                self.max_hourly_price_per_gpu,
            )
        )

    def _supported(self) -> list[Gpu]:
        gpus = [GPUS[key] for key in self.supported_gpus]
        if not gpus:
            raise ValueError("No GPUs match specified node_selector criteria")
        return gpus

    @property
    def compute_multiplier(self) -> float:
        """gpu_count times the multiplier of the cheapest supported GPU (miners will pick the cheapest)."""
        return self.gpu_count * min(compute_multiplier(gpu.key) for gpu in self._supported())

    @property
    def hourly_price_usd(self) -> float:
        """Estimated USD per hour: gpu_count times the cheapest supported GPU's rate."""
        return self.gpu_count * min(gpu.hourly_rate for gpu in self._supported())

    @property
    def price_range_usd(self) -> tuple[float, float]:
        """(min, max) USD per hour over the supported GPUs, for gpu_count of them."""
        rates = [gpu.hourly_rate for gpu in self._supported()]
        return self.gpu_count * min(rates), self.gpu_count * max(rates)

    @property
    def price_spread(self) -> float:
        """Most expensive over cheapest supported rate (deploy rejects > 2.5 when `include` is set)."""
        rates = [gpu.hourly_rate for gpu in self._supported()]
        return max(rates) / min(rates)

    def current_estimated_price(self, tao_usd: float | None) -> _Dict[str, _Dict[str, float]]:
        """Hourly and per-second estimate in USD, plus TAO when the TAO/USD rate is known."""
        hour = self.hourly_price_usd
        price = {"usd": {"hour": hour, "second": hour / 3600}}
        if tao_usd is not None:
            if tao_usd <= 0:
                raise ValueError(f"TAO/USD rate must be positive, got {tao_usd}")
            price["tao"] = {"hour": hour / tao_usd, "second": hour / tao_usd / 3600}
        return price

    # Deliberately overrides pydantic's deprecated `BaseModel.dict`: SDK chute code and the deploy
    # command call `node_selector.dict()` for the request body and expect exactly the five SDK keys,
    # None values included, in this order. Use `model_dump()` for pydantic's generic dump.
    def dict(self, **kwargs: Any) -> _Dict[str, Any]:
        """The five keys the SDK sends at deploy, None kept, GPU names as given."""
        if kwargs:
            raise TypeError(f"NodeSelector.dict() takes no options (got {sorted(kwargs)}); use model_dump()")
        body = {key: _copy(getattr(self, key)) for key in _SDK_KEYS}
        for key, given in self._given.items():
            # Only while the field still holds those names (lower-cased): a later assignment wins.
            if given is not None and [name.lower() for name in given] == body[key]:
                body[key] = list(given)
        return body

    def stored(self) -> _Dict[str, Any]:
        """The dict the API stores for a chute: the six fields, no computed keys."""
        return self.model_dump()


def _copy(value: Any) -> Any:
    # Lists are copied so callers mutating the body cannot change the model.
    return list(value) if isinstance(value, list) else value
