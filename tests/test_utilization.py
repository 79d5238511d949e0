"""Utilization drives scaling: the metrics service computes it from the invocation records, logs
it in the capacity log with the scheduler's decisions, answers GET /chutes/utilization, and the
registry's scheduler scales out on it (over gRPC).

A suite of its own with the local miner (two simulated GPUs): the echo chute deployed with room
for two instances, loaded through the gateway with slow streaming calls until the scheduler adds
the second instance.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from chutes.registry.v1 import internal_pb2
from services.metrics import capacity, views
from services.registry.scheduler import plan
from tests import test_scheduler as plans
from tests.conftest import RunningSuite, suite_with_miner, wait_for
from tests.test_identity import Hotkey, User, admin
from tests.test_invocation_records import fetch
from tests.test_registry import SDK_VERSION, key
from tests.test_runtime import deploy_echo, warm

#: The spec's row (chutes-api.md 4.15), derived fields included.
ROW_KEYS = {
    "chute_id", "name", "timestamp", "utilization_current", "utilization_5m", "utilization_15m",
    "utilization_1h", "rate_limit_ratio_5m", "rate_limit_ratio_15m", "rate_limit_ratio_1h",
    "total_requests_5m", "total_requests_15m", "total_requests_1h", "completed_requests_5m",
    "completed_requests_15m", "completed_requests_1h", "rate_limited_requests_5m",
    "rate_limited_requests_15m", "rate_limited_requests_1h", "instance_count", "action_taken",
    "target_count", "effective_multiplier", "total_instance_count", "active_instance_count",
    "target", "scalable", "scale_allowance", "avg_busy_ratio", "total_invocations",
    "total_rate_limit_errors",
}  # fmt: skip


@pytest.fixture(scope="module")
def suite(database_url: str) -> Iterator[RunningSuite]:
    with suite_with_miner(database_url, "utilization", capacity_log_seconds="1") as running:
        yield running


@pytest.fixture(scope="module")
def owner(suite: RunningSuite) -> User:
    username = "util" + uuid.uuid4().hex[:8]
    hotkey = Hotkey.new()
    made = admin(suite, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100")
    admin(
        suite, "add-image", "--username", username, "--name", "base", "--tag", "1.0",
        "--chutes-version", SDK_VERSION,
    )  # fmt: skip
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


def utilization(suite: RunningSuite) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{suite.gateway}/chutes/utilization", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    rows = response.json()
    assert isinstance(rows, list)
    return {row["chute_id"]: row for row in rows}


def instances(suite: RunningSuite, chute_id: str) -> int:
    return len(
        fetch(suite, "SELECT 1 FROM registry.instances WHERE chute_id = $1 AND state <> 'stopping'", chute_id)
    )


def test_load_raises_utilization_and_the_scheduler_adds_an_instance(suite: RunningSuite, owner: User) -> None:
    chute = deploy_echo(suite, owner, "util-" + uuid.uuid4().hex[:6], max_instances=2, scaling_threshold=0.5)
    chute_id, slug = chute["chute_id"], chute["slug"]
    assert warm(suite, owner, chute_id)[-1]["status"] == "hot"
    # The warm chute is logged with no load, and the scheduler's target of 1.
    quiet = wait_for("a first capacity-log row", lambda: utilization(suite).get(chute_id), 15)
    assert quiet is not None and set(quiet) == ROW_KEYS
    assert (quiet["name"], quiet["target"], quiet["active_instance_count"], quiet["utilization_current"]) == (
        views.PRIVATE_NAME, 1, 1, 0.0,
    )  # fmt: skip

    # Four callers keep the chute's four slots busy with 0.5-second streams.
    stop = threading.Event()
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                response = http.post(
                    f"{suite.gateway}/count",
                    json={"to": 10},
                    headers={"Host": f"{slug}.localhost", **key(owner)},
                )
                statuses.append(response.status_code)

    callers = [threading.Thread(target=call) for _ in range(4)]
    started = time.monotonic()
    for caller in callers:
        caller.start()
    try:
        wait_for("the scheduler's second instance", lambda: instances(suite, chute_id) == 2, 30, 0.1)
        launched_after = time.monotonic() - started
        busy = wait_for(
            "the scale-out in the capacity log",
            lambda: (row := utilization(suite)[chute_id])["action_taken"] == "scaled_up" and row,
            10,
        )
    finally:
        stop.set()
        for caller in callers:
            caller.join()
    print(f"\nload start -> second instance placed: {launched_after:.2f} s")
    assert statuses and set(statuses) == {200}
    assert busy["utilization_current"] > 0.5 and busy["utilization_5m"] > 0.5
    assert busy["target_count"] == 2 and busy["total_requests_5m"] > 0
    assert busy["completed_requests_5m"] == busy["total_requests_5m"] == busy["total_invocations"]
    assert busy["rate_limit_ratio_5m"] == 0.0 and busy["total_rate_limit_errors"] == 0.0

    # Both instances serve; every call the callers made is counted once the records are in.
    later = wait_for(
        "two active instances and every call counted",
        lambda: (
            (row := utilization(suite)[chute_id])["active_instance_count"] == 2
            and row["total_requests_1h"] == len(statuses)
            and row
        ),
        30,
    )
    assert later["target"] == 2 and later["scalable"] is False and later["scale_allowance"] == 0
    assert later["instance_count"] == later["total_instance_count"] == 2
    assert later["avg_busy_ratio"] == later["utilization_1h"] > 0
    assert later["effective_multiplier"] > 0
    logged = fetch(
        suite, "SELECT action_taken, target_count FROM metrics.capacity_log WHERE chute_id = $1", chute_id
    )
    assert ("scaled_up", 2) in {(r["action_taken"], r["target_count"]) for r in logged}


def test_unknown_query_parameters_are_ignored_and_rows_come_by_requests(suite: RunningSuite) -> None:
    assert httpx.get(f"{suite.gateway}/chutes/utilization?chute_id=x", timeout=10).status_code == 200
    rows = httpx.get(f"{suite.gateway}/chutes/utilization", timeout=10).json()
    totals = [r["total_requests_1h"] for r in rows]
    assert totals == sorted(totals, reverse=True)


def _ready(seconds_ago: float, now: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(now - timedelta(seconds=seconds_ago))
    return stamp


def test_utilization_counts_only_the_time_instances_were_routable() -> None:
    now = datetime.now(UTC)
    chute = internal_pb2.ChuteFleet(chute_id="c1", concurrency=2, effective_multiplier=1.0)
    chute.instances.add(instance_id="old", active=True, ready_at=_ready(7200, now))
    chute.instances.add(instance_id="new", active=True, ready_at=_ready(10, now))
    chute.instances.add(instance_id="starting", active=False)
    seen = {f"busy_{w}": 30.0 for w in ("current", "5m", "15m", "1h")} | {
        f"{kind}_{w}": n
        for w in ("5m", "15m", "1h")
        for kind, n in (("total", 10), ("completed", 6), ("rate_limited", 2))
    }
    row = capacity.load_row(chute, seen, now)
    # 30 busy seconds over 2 slots x (30 + 10) instance-seconds in the last 30 s; x (300 + 10) in 5 m.
    assert row["utilization_current"] == pytest.approx(30 / (2 * 40))
    assert row["utilization_5m"] == pytest.approx(30 / (2 * 310))
    assert row["utilization_1h"] == pytest.approx(30 / (2 * 3610))
    assert row["rate_limit_ratio_5m"] == pytest.approx(2 / 8)
    assert row["instance_count"] == 3
    idle = capacity.load_row(internal_pb2.ChuteFleet(chute_id="c2", concurrency=1), capacity.no_calls(), now)
    assert idle["utilization_current"] == 0.0 and idle["total_requests_1h"] == 0.0


def test_the_plan_says_each_chute_s_target_and_what_changed() -> None:
    busy = plan(
        [plans.chute([plans.instance("i1")], max_instances=2)],
        [plans.node(used=[0])],
        lambda _: 0.9,
        plans.NOW,
    )
    assert (busy.targets, busy.actions) == ({"c1": 2}, {"c1": "scaled_up"})
    full = plan(
        [plans.chute([plans.instance("i1")], max_instances=2)],
        [plans.node(used=[0, 1])],
        lambda _: 0.9,
        plans.NOW,
    )
    assert (full.targets, full.actions) == ({"c1": 2}, {"c1": "scale_up_skipped"})
    quiet = plan(
        [plans.chute([plans.instance("i1"), plans.instance("i2")], max_instances=2)],
        [plans.node(used=[0, 1])],
        lambda _: 0.1,
        plans.NOW,
    )
    assert (quiet.targets, quiet.actions) == ({"c1": 1}, {"c1": "scaled_down"})
    steady = plan([plans.chute([plans.instance("i1")])], [plans.node(used=[0])], lambda _: 0.5, plans.NOW)
    assert (steady.targets, steady.actions) == ({"c1": 1}, {})
