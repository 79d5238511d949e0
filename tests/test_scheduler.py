"""The scheduler's decisions, without a database (services/registry/scheduler.py `plan`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from services.registry.scheduler import Launch, Stop, plan

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
A100_SELECTOR = {"gpu_count": 1, "include": ["a100"]}


def chute(instances: list[dict[str, Any]] = (), **changes: Any) -> dict[str, Any]:  # type: ignore[assignment]
    row: dict[str, Any] = {
        "chute_id": "c1",
        "version": "v2",
        "node_selector": json.dumps(A100_SELECTOR),
        "concurrency": 1,
        "max_instances": 1,
        "scaling_threshold": None,
        "shutdown_after_seconds": None,
        "disabled": False,
        "has_cords": True,
        "wanted_at": NOW - timedelta(seconds=5),
        "last_invoked_at": None,
        "instances": json.dumps(list(instances)),
    }
    row.update(changes)
    return row


def instance(
    instance_id: str, version: str = "v2", state: str = "ready", node: str = "n1", age: int = 0
) -> dict[str, Any]:
    created = (NOW - timedelta(seconds=age)).isoformat()
    return {
        "instance_id": instance_id,
        "version": version,
        "state": state,
        "node_id": node,
        "created_at": created,
    }


def node(
    node_id: str = "n1",
    gpus: str = "a100",
    count: int = 2,
    used: list[int] = (),  # type: ignore[assignment]
    tee: bool = False,
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "tee": tee,
        "gpus": json.dumps([{"gpu_identifier": gpus, "device_index": i} for i in range(count)]),
        "used": json.dumps(list(used)),
    }


def idle(_: str) -> float:
    return 0.0


def test_a_wanted_chute_without_instances_gets_one_on_a_fitting_node() -> None:
    decided = plan([chute()], [node("h", gpus="h100"), node("a", gpus="a100", used=[0])], idle, NOW)
    assert decided.launches == [Launch("c1", "v2", "a", (1,))]
    assert decided.stops == [] and decided.unplaceable == []


def test_no_fitting_node_leaves_the_chute_cold_and_says_why() -> None:
    decided = plan([chute()], [node(gpus="h100"), node("full", used=[0, 1])], idle, NOW)
    assert decided.launches == [] and decided.unplaceable == ["c1"]


def test_tee_chutes_run_only_on_nodes_that_offer_a_tee() -> None:
    nodes = [node("plain", count=8), node("tee", tee=True, used=[0, 1])]
    assert plan([chute(tee=True)], nodes, idle, NOW).unplaceable == ["c1"]
    decided = plan([chute(tee=True)], [*nodes, node("tee2", tee=True)], idle, NOW)
    assert decided.launches == [Launch("c1", "v2", "tee2", (0,))]
    # Other chutes may still use a TEE node (the most free GPUs wins).
    assert plan([chute()], [node("plain", used=[0]), node("tee2", tee=True)], idle, NOW).launches == [
        Launch("c1", "v2", "tee2", (0,))
    ]


def test_idle_chutes_scale_to_zero() -> None:
    stale = NOW - timedelta(seconds=301)
    decided = plan([chute([instance("i1")], wanted_at=stale)], [node(used=[0])], idle, NOW)
    assert decided.stops == [Stop("i1", "n1")] and decided.launches == []
    kept = plan([chute([instance("i1")], wanted_at=stale, shutdown_after_seconds=600)], [node()], idle, NOW)
    assert kept.stops == []


def test_invocations_keep_a_chute_in_use() -> None:
    decided = plan(
        [chute([instance("i1")], wanted_at=NOW - timedelta(hours=1), last_invoked_at=NOW)],
        [node()],
        idle,
        NOW,
    )
    assert decided.stops == [] and decided.launches == []


def test_busy_chutes_scale_out_up_to_max_instances_and_back() -> None:
    busy = plan([chute([instance("i1")], max_instances=2)], [node(used=[0])], lambda _: 0.9, NOW)
    assert busy.launches == [Launch("c1", "v2", "n1", (1,))]
    capped = plan(
        [chute([instance("i1"), instance("i2")], max_instances=2)], [node(used=[0, 1])], lambda _: 0.9, NOW
    )
    assert capped.launches == [] and capped.stops == []
    quiet = plan(
        [chute([instance("i1", age=10), instance("i2", age=5)], max_instances=2)],
        [node(used=[0, 1])],
        idle,
        NOW,
    )
    assert quiet.stops == [Stop("i1", "n1")]


def test_a_redeploy_rolls_old_instances_out_only_once_a_new_one_is_ready() -> None:
    starting = plan(
        [chute([instance("old", version="v1"), instance("new", state="started")])], [node()], idle, NOW
    )
    assert starting.stops == [] and starting.launches == []
    ready = plan([chute([instance("old", version="v1"), instance("new")])], [node()], idle, NOW)
    assert ready.stops == [Stop("old", "n1")]
    first = plan([chute([instance("old", version="v1")])], [node(used=[0])], idle, NOW)
    assert first.launches == [Launch("c1", "v2", "n1", (1,))] and first.stops == []


def test_stopping_instances_are_not_counted_and_disabled_chutes_stop() -> None:
    decided = plan([chute([instance("i1", state="stopping")])], [node(used=[0])], idle, NOW)
    assert decided.launches == [Launch("c1", "v2", "n1", (1,))]
    disabled = plan([chute([instance("i1")], disabled=True)], [node()], idle, NOW)
    assert disabled.stops == [Stop("i1", "n1")]
