"""NodeSelector and the GPU catalog: validation, supported GPUs, multiplier and prices (spec §8)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chutes.chute import NodeSelector
from chutes.gpu import COMPUTE_UNIT_PRICE_BASIS, CONSUMER_GPUS, GPUS, MAX_GPU_PRICE_DELTA, compute_multiplier


def test_catalog_rows() -> None:
    assert len(GPUS) == 27
    assert (GPUS["h20"].vram_gb, GPUS["h20"].hourly_rate) == (96, 1.20)
    assert (GPUS["b300"].vram_gb, GPUS["b300"].hourly_rate) == (288, 4.50)
    assert (GPUS["a4000"].vram_gb, GPUS["a4000"].hourly_rate) == (16, 0.20)
    assert (GPUS["mi300x"].vram_gb, GPUS["mi300x"].hourly_rate) == (192, 3.00)
    assert all(key == gpu.key for key, gpu in GPUS.items())
    assert COMPUTE_UNIT_PRICE_BASIS == 4.5
    assert MAX_GPU_PRICE_DELTA == 2.5
    assert CONSUMER_GPUS == {"3090", "4090", "5090"}


def test_catalog_multiplier_matches_table() -> None:
    assert compute_multiplier("b200") == 1.0
    assert compute_multiplier("h100") == pytest.approx(0.3978, abs=1e-4)
    assert compute_multiplier("pro_6000") == pytest.approx(0.4)
    assert compute_multiplier("a4000") == pytest.approx(0.0444, abs=1e-4)
    with pytest.raises(KeyError):
        compute_multiplier("v100")


def test_defaults() -> None:
    selector = NodeSelector()
    assert selector.gpu_count == 1
    assert selector.min_vram_gb_per_gpu == 16
    assert selector.max_hourly_price_per_gpu is None
    assert selector.include is None
    assert selector.exclude is None
    assert selector.dynamic is False


@pytest.mark.parametrize(
    "field, value",
    [
        ("gpu_count", 0),
        ("gpu_count", 9),
        ("min_vram_gb_per_gpu", 15),
        ("min_vram_gb_per_gpu", 141),
        ("max_hourly_price_per_gpu", 0),
        ("max_hourly_price_per_gpu", 10),
    ],
)
def test_bounds(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as raised:
        NodeSelector.model_validate({field: value})
    assert raised.value.errors()[0]["loc"] == (field,)


def test_bounds_edges_accepted() -> None:
    selector = NodeSelector(gpu_count=8, min_vram_gb_per_gpu=140, max_hourly_price_per_gpu=9.99)
    assert (selector.gpu_count, selector.min_vram_gb_per_gpu) == (8, 140)
    assert selector.max_hourly_price_per_gpu == 9.99


@pytest.mark.parametrize("field", ["include", "exclude"])
def test_unknown_gpu_key_rejected(field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        NodeSelector.model_validate({field: ["h100", "v100"]})
    message = str(raised.value)
    assert "v100" in message
    assert "h100," in message  # the valid keys are listed
    assert raised.value.errors()[0]["loc"] == (field,)


def test_upper_case_keys_accepted_and_lowered() -> None:
    selector = NodeSelector(include=["H100", "H200"], exclude=["A100_SXM"])
    assert selector.include == ["h100", "h200"]
    assert selector.exclude == ["a100_sxm"]
    assert selector.supported_gpus == ["h100", "h200"]


def test_computed_and_unknown_keys_dropped_on_input() -> None:
    returned = {
        "gpu_count": 2,
        "min_vram_gb_per_gpu": 80,
        "include": None,
        "exclude": None,
        "dynamic": False,
        "compute_multiplier": 99.0,
        "supported_gpus": ["not-a-gpu"],
        "something_else": 1,
    }
    selector = NodeSelector.model_validate(returned)
    assert selector.stored() == {
        "gpu_count": 2,
        "min_vram_gb_per_gpu": 80,
        "max_hourly_price_per_gpu": None,
        "include": None,
        "exclude": None,
        "dynamic": False,
    }
    assert selector.compute_multiplier == pytest.approx(2 * 1.20 / 4.5)
    assert NodeSelector(**returned).supported_gpus == selector.supported_gpus


def test_supported_gpus_default() -> None:
    # Cheapest is a4000 at $0.20, so the price-delta ceiling is $0.50 (a40 and a6000 exactly on it);
    # pro_6000 ($1.80) is kept by its exemption; sorted by rate, then key.
    assert NodeSelector().supported_gpus == [
        "a4000",
        "a4000_ada",
        "3090",
        "a10",
        "a5000",
        "l4",
        "4090",
        "a40",
        "a6000",
        "pro_6000",
    ]


def test_supported_gpus_min_vram_80() -> None:
    # 80+ GB: cheapest are a100/h20 at $1.20 -> ceiling $3.00; b200/b300 ($4.50) drop out, mi300x
    # ($3.00, inside the ceiling) is dropped because it would be mixed with NVIDIA GPUs.
    assert NodeSelector(min_vram_gb_per_gpu=80).supported_gpus == [
        "a100",
        "h20",
        "a100_sxm",
        "h800",
        "h100",
        "pro_6000",
        "h100_nvl",
        "h100_sxm",
        "h200",
    ]


def test_supported_gpus_min_vram_140() -> None:
    # h200 at $2.75 -> ceiling $6.875 keeps b200/b300; mi300x dropped as mixed.
    assert NodeSelector(min_vram_gb_per_gpu=140).supported_gpus == ["h200", "b200", "b300"]


def test_supported_gpus_include_is_exact() -> None:
    # With include the price-delta rule does not apply: a4000 and b200 (22.5x apart) both stay.
    assert NodeSelector(include=["h200", "h100"]).supported_gpus == ["h100", "h200"]
    assert NodeSelector(include=["b200", "a4000"]).supported_gpus == ["a4000", "b200"]
    # ... but the VRAM floor still does.
    assert NodeSelector(include=["h100", "a6000"], min_vram_gb_per_gpu=80).supported_gpus == ["h100"]


def test_supported_gpus_exclude() -> None:
    # Without a4000 the cheapest is a4000_ada ($0.21) -> ceiling $0.525; an excluded pro_6000 stays out.
    assert NodeSelector(exclude=["a4000", "l4", "pro_6000"]).supported_gpus == [
        "a4000_ada",
        "3090",
        "a10",
        "a5000",
        "4090",
        "a40",
        "a6000",
    ]
    assert NodeSelector(min_vram_gb_per_gpu=80, exclude=["a100", "h20"]).supported_gpus == [
        "a100_sxm",
        "h800",
        "h100",
        "pro_6000",
        "h100_nvl",
        "h100_sxm",
        "h200",
    ]


def test_supported_gpus_max_hourly_price() -> None:
    # The price cap applies before the pro_6000 exemption, so pro_6000 ($1.80) is gone here.
    assert NodeSelector(max_hourly_price_per_gpu=0.25).supported_gpus == [
        "a4000",
        "a4000_ada",
        "3090",
        "a10",
        "a5000",
        "l4",
    ]


def test_supported_gpus_consumer_only_include() -> None:
    selector = NodeSelector(include=["3090", "4090", "5090"])
    assert selector.supported_gpus == ["3090", "4090", "5090"]
    assert set(selector.supported_gpus) <= CONSUMER_GPUS
    assert selector.price_spread == pytest.approx(0.70 / 0.25)


def test_supported_gpus_mi300x() -> None:
    assert NodeSelector(include=["mi300x", "h200", "b200"]).supported_gpus == ["h200", "b200"]
    assert NodeSelector(include=["mi300x"]).supported_gpus == ["mi300x"]
    assert NodeSelector(include=["mi300x", "h200"], exclude=["h200"]).supported_gpus == ["mi300x"]


def test_nothing_supported() -> None:
    selector = NodeSelector(include=["a4000"], min_vram_gb_per_gpu=24)
    assert selector.supported_gpus == []
    for attribute in ("compute_multiplier", "hourly_price_usd", "price_range_usd", "price_spread"):
        with pytest.raises(ValueError, match="No GPUs match"):
            getattr(selector, attribute)


def test_compute_multiplier() -> None:
    assert NodeSelector(gpu_count=2, include=["h100"]).compute_multiplier == pytest.approx(2 * 1.79 / 4.5)
    assert NodeSelector().compute_multiplier == pytest.approx(0.20 / 4.5)
    # The cheapest supported GPU decides (h100 at $1.79, not h200).
    assert NodeSelector(gpu_count=8, include=["h200", "h100"]).compute_multiplier == pytest.approx(
        8 * 1.79 / 4.5
    )
    assert NodeSelector(gpu_count=8, include=["b300"]).compute_multiplier == pytest.approx(8.0)


def test_hourly_price() -> None:
    assert NodeSelector().hourly_price_usd == pytest.approx(0.20)
    assert NodeSelector(gpu_count=4, min_vram_gb_per_gpu=80).hourly_price_usd == pytest.approx(4.80)
    assert NodeSelector(gpu_count=2, include=["h100", "h200"]).hourly_price_usd == pytest.approx(3.58)


def test_price_range_and_spread() -> None:
    low, high = NodeSelector(gpu_count=2, include=["h100", "h200"]).price_range_usd
    assert (low, high) == (pytest.approx(3.58), pytest.approx(5.50))
    assert NodeSelector(include=["h100", "h200"]).price_spread == pytest.approx(2.75 / 1.79)
    # Default: a4000 $0.20 .. pro_6000 $1.80.
    assert NodeSelector().price_range_usd == (pytest.approx(0.20), pytest.approx(1.80))
    assert NodeSelector().price_spread == pytest.approx(9.0)
    assert NodeSelector(include=["a4000", "b200"]).price_spread == pytest.approx(22.5)


def test_dict_is_the_sdk_body() -> None:
    body = NodeSelector(gpu_count=2, include=["H100"], dynamic=True).dict()
    assert list(body) == [
        "gpu_count",
        "min_vram_gb_per_gpu",
        "max_hourly_price_per_gpu",
        "include",
        "exclude",
    ]
    assert body == {
        "gpu_count": 2,
        "min_vram_gb_per_gpu": 16,
        "max_hourly_price_per_gpu": None,
        # As given: the published SDK sends the names unchanged (the services lower-case them).
        "include": ["H100"],
        "exclude": None,
    }
    with pytest.raises(TypeError):
        NodeSelector().dict(exclude_none=True)


def test_dict_round_trips() -> None:
    original = NodeSelector(
        gpu_count=3, min_vram_gb_per_gpu=48, max_hourly_price_per_gpu=2.0, exclude=["l40"]
    )
    again = NodeSelector(**original.dict())
    assert again == original
    # 48+ GB, at most $2.00, no l40: cheapest a40/a6000 at $0.50 -> ceiling $1.25, plus pro_6000.
    assert again.supported_gpus == [
        "a40",
        "a6000",
        "a6000_ada",
        "l40s",
        "a100",
        "h20",
        "a100_sxm",
        "pro_6000",
    ]


def test_stored() -> None:
    stored = NodeSelector(gpu_count=2, min_vram_gb_per_gpu=80, include=["H200"], dynamic=True).stored()
    assert stored == {
        "gpu_count": 2,
        "min_vram_gb_per_gpu": 80,
        "max_hourly_price_per_gpu": None,
        "include": ["h200"],
        "exclude": None,
        "dynamic": True,
    }
    assert "compute_multiplier" not in stored
    assert "supported_gpus" not in stored


def test_current_estimated_price_usd_only() -> None:
    price = NodeSelector(gpu_count=2, include=["h100"]).current_estimated_price(None)
    assert list(price) == ["usd"]
    assert price["usd"]["hour"] == pytest.approx(3.58)
    assert price["usd"]["second"] == pytest.approx(3.58 / 3600)


def test_current_estimated_price_with_tao() -> None:
    price = NodeSelector(gpu_count=2, include=["h100"]).current_estimated_price(358.0)
    assert price["usd"] == {"hour": pytest.approx(3.58), "second": pytest.approx(3.58 / 3600)}
    assert price["tao"] == {"hour": pytest.approx(0.01), "second": pytest.approx(0.01 / 3600)}
    with pytest.raises(ValueError):
        NodeSelector().current_estimated_price(0.0)
