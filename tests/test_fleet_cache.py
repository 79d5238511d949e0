"""The fleet metrics asks for every second, without a suite: the registry reuses a chute's
ChuteFleet while its row and the scheduler's decisions are unchanged (services/registry/
job_placements.py), and the capacity tick gives idle chutes no ChuteLoad (services/metrics/
capacity.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from chutes.registry.v1 import internal_pb2
from services.metrics import capacity
from services.metrics import store as metrics_store
from services.registry import job_placements
from services.registry import store as registry_store

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def row(chute_id: str = "c1", **changes: Any) -> dict[str, Any]:
    fleet_row: dict[str, Any] = {
        "chute_id": chute_id,
        "name": "echo",
        "public": True,
        "username": "someone",
        "created_at": NOW - timedelta(days=1),
        "boost": None,
        "tee": False,
        "node_selector": json.dumps({"gpu_count": 1, "min_vram_gb_per_gpu": 24}),
        "standard_template": "",
        "invocation_count": 0,
        "concurrency": 4,
        "instances": json.dumps(
            [{"instance_id": "i1", "miner_hotkey": "m", "active": True, "ready_at": NOW.isoformat()}]
        ),
    }
    fleet_row.update(changes)
    return fleet_row


class FakeDb:
    @asynccontextmanager
    async def raw(self) -> AsyncIterator[None]:
        yield None


def servicer() -> job_placements.JobPlacementServicer:
    scheduler = SimpleNamespace(targets={}, actions={}, wake=lambda: None)
    return job_placements.JobPlacementServicer(FakeDb(), scheduler)  # type: ignore[arg-type]


def test_an_unchanged_chute_reuses_its_message_and_any_change_shows() -> None:
    fleet = servicer()
    first = fleet._fleet_message(row())
    assert fleet._fleet_message(row()) is first
    assert first.instances[0].ready_at.ToDatetime(UTC) == NOW
    # A changed instance, selector or scheduler decision is in the next answer.
    stopped = row(
        instances=json.dumps([{"instance_id": "i1", "miner_hotkey": "m", "active": False, "ready_at": None}])
    )
    assert not fleet._fleet_message(stopped).instances[0].active
    assert not fleet._fleet_message(stopped).instances[0].HasField("ready_at")
    bigger = row(node_selector=json.dumps({"gpu_count": 8, "min_vram_gb_per_gpu": 80}))
    assert fleet._fleet_message(bigger).effective_multiplier > first.effective_multiplier
    assert fleet._fleet_message(row(tee=True)).effective_multiplier == pytest.approx(
        first.effective_multiplier * 2.25
    )
    fleet.scheduler.targets["c1"] = 2
    fleet.scheduler.actions["c1"] = ("scaled_up", NOW)
    decided = fleet._fleet_message(row())
    assert (decided.target_count, decided.last_action) == (2, "scaled_up")
    assert decided.last_action_at.ToDatetime(UTC) == NOW
    assert fleet._fleet_message(row()) is decided


def test_the_whole_fleet_forgets_chutes_that_left_it(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [row("c1"), row("c2")]

    async def fleet_rows(connection: Any, standard_template: str = "", chute_ids: Any = ()) -> list[Any]:
        return [r for r in rows if not chute_ids or r["chute_id"] in chute_ids]

    monkeypatch.setattr(registry_store, "fleet", fleet_rows)
    fleet = servicer()
    answer = asyncio.run(fleet.ListFleet(internal_pb2.ListFleetRequest(), None))  # type: ignore[arg-type]
    assert [c.chute_id for c in answer.chutes] == ["c1", "c2"]
    asyncio.run(fleet.ListFleet(internal_pb2.ListFleetRequest(chute_ids=["c2"]), None))  # type: ignore[arg-type]
    assert set(fleet._fleet_cache) == {"c1", "c2"}
    rows.pop(0)
    answer = asyncio.run(fleet.ListFleet(internal_pb2.ListFleetRequest(), None))  # type: ignore[arg-type]
    assert [c.chute_id for c in answer.chutes] == ["c2"] and set(fleet._fleet_cache) == {"c2"}


def test_idle_chutes_get_no_load_and_are_still_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    fleet = internal_pb2.ListFleetResponse()
    for chute_id in ("busy", "idle"):
        chute = fleet.chutes.add(chute_id=chute_id, concurrency=2, effective_multiplier=1.0)
        added = chute.instances.add(instance_id=f"{chute_id}-1", active=True)
        added.ready_at.FromDatetime(now - timedelta(hours=2))

    async def list_fleet(request: Any, **options: Any) -> internal_pb2.ListFleetResponse:
        return fleet

    async def load(connection: Any, chute_ids: list[str], at: datetime, windows: tuple[str, ...]) -> Any:
        sums = {f"busy_{w}": 15.0 for w in windows} | {
            f"{kind}_{w}": 3.0 for w in windows if w != "current" for kind in ("total", "completed")
        }
        return {"busy": sums}

    logged: list[dict[str, Any]] = []

    async def add_rows(connection: Any, rows: list[dict[str, Any]]) -> bool:
        logged.extend(rows)
        return True

    monkeypatch.setattr(metrics_store, "load", load)
    monkeypatch.setattr(metrics_store, "add_capacity_rows", add_rows)
    registry = SimpleNamespace(ListFleet=list_fleet)
    tick = capacity.Capacity(FakeDb(), registry, 60.0)  # type: ignore[arg-type]
    asyncio.run(tick.tick())
    # The idle chute reads 0 by its absence (ListUtilization); both are in the capacity log.
    assert [load.chute_id for load in tick.latest] == ["busy"]
    assert tick.latest[0].utilization_current == pytest.approx(15 / (2 * 30))
    assert [r["chute_id"] for r in logged] == ["busy", "idle"]
    idle = logged[1]
    assert idle["utilization_current"] == 0.0 and idle["total_requests_1h"] == 0.0
    assert (idle["instance_count"], idle["action_taken"], idle["target_count"]) == (1, "no_action", 1)
