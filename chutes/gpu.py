"""The GPU catalog: every GPU a chute may ask for, with its VRAM and hourly rate.

The numbers are the Chutes API's `api/gpu.py` as of the Feb-2026 fork (spec `chutes-api.md` §8.2):
VRAM in GB, hourly rate in USD per GPU. The real module also carries hardware-verification data
(device-name regexes, compute capability, clocks, graval parameters); only what node selection and
pricing need is kept here.

`COMPUTE_UNIT_PRICE_BASIS` is the most expensive rate in the table (b200/b300): a GPU's compute
multiplier is its rate relative to it, so a b200 counts as 1.0 and an h100 as 1.79 / 4.5.
`MAX_GPU_PRICE_DELTA` caps how far apart the rates of the GPUs one selector accepts may be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Gpu:
    """One catalog entry: short key (as used in `include`/`exclude`), VRAM in GB, USD per hour."""

    key: str
    vram_gb: int
    hourly_rate: float


_CATALOG: Final[tuple[Gpu, ...]] = (
    Gpu("3090", 24, 0.25),
    Gpu("4090", 24, 0.40),
    Gpu("5090", 32, 0.70),
    Gpu("a4000", 16, 0.20),
    Gpu("a4000_ada", 20, 0.21),
    Gpu("a5000", 24, 0.25),
    Gpu("a6000", 48, 0.50),
    Gpu("a6000_ada", 48, 0.75),
    Gpu("pro_6000", 96, 1.80),
    Gpu("l4", 24, 0.25),
    Gpu("a10", 24, 0.25),
    Gpu("a40", 48, 0.50),
    Gpu("l40", 48, 0.55),
    Gpu("l40s", 48, 0.85),
    Gpu("a100_40gb", 40, 1.10),
    Gpu("a100_40gb_sxm", 40, 1.15),
    Gpu("a100", 80, 1.20),
    Gpu("a100_sxm", 80, 1.25),
    Gpu("h100", 80, 1.79),
    Gpu("h100_nvl", 96, 2.25),
    Gpu("h100_sxm", 80, 2.35),
    Gpu("h800", 80, 1.50),
    Gpu("h20", 96, 1.20),
    Gpu("h200", 140, 2.75),
    Gpu("mi300x", 192, 3.00),
    Gpu("b200", 192, 4.50),
    Gpu("b300", 288, 4.50),
)

GPUS: Final[dict[str, Gpu]] = {gpu.key: gpu for gpu in _CATALOG}

COMPUTE_UNIT_PRICE_BASIS: Final = 4.5
MAX_GPU_PRICE_DELTA: Final = 2.5

# GPUs a chute may not require exclusively (deploy rule, spec §4.9 item 12).
CONSUMER_GPUS: Final[frozenset[str]] = frozenset({"3090", "4090", "5090"})


def compute_multiplier(key: str) -> float:
    """The GPU's hourly rate relative to the most expensive one; KeyError for an unknown key."""
    return GPUS[key].hourly_rate / COMPUTE_UNIT_PRICE_BASIS
