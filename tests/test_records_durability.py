"""No invocation record is lost when the metrics service stops: what it received but held for a
batch is written, and the chutes' counts reach the registry, before the process exits.

Each test runs a suite of its own with the local miner (tests/conftest.py `suite_with_miner`),
calls the echo chute through the gateway and stops right after the last answer: the metrics
process alone (SIGTERM; `up` then stops the rest), or the whole suite (SIGTERM to `up`). The
suite's database outlives it, so the rows are counted afterwards.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from tests.conftest import RunningSuite, suite_with_miner
from tests.test_identity import Hotkey, User, admin
from tests.test_invocation_records import fetch
from tests.test_registry import SDK_VERSION, key
from tests.test_runtime import deploy_echo, warm

#: Enough calls that several batches' worth are in flight or held when the stop comes.
CALLS = 400


def _owner(suite: RunningSuite) -> User:
    username = "dur" + uuid.uuid4().hex[:8]
    hotkey = Hotkey.new()
    made = admin(suite, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100")
    admin(
        suite, "add-image", "--username", username, "--name", "base", "--tag", "1.0",
        "--chutes-version", SDK_VERSION,
    )  # fmt: skip
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


def _call_many(suite: RunningSuite, owner: User, slug: str) -> set[str]:
    """CALLS echoes from 8 clients at once; the invocation ids of those answered 200."""
    headers = {"Host": f"{slug}.localhost", **key(owner)}

    def call_some(n: int) -> list[str]:
        with httpx.Client(base_url=suite.gateway, headers=headers, timeout=30) as client:
            answers = [client.post("/echo", json={"text": f"{n}-{i}"}) for i in range(CALLS // 8)]
        assert [a.status_code for a in answers] == [200] * len(answers)
        return [a.headers["x-chutes-invocationid"] for a in answers]

    with ThreadPoolExecutor(8) as pool:
        return {i for ids in pool.map(call_some, range(8)) for i in ids}


def _metrics_pid(suite: RunningSuite) -> int:
    """The metrics service `up` started for this suite (a child of `up` running its module)."""
    children = Path(f"/proc/{suite.process.pid}/task/{suite.process.pid}/children").read_text().split()
    for pid in children:
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"services.metrics"]:
            return int(pid)
    raise AssertionError("no metrics process under up")


def _stop_right_after_calls(database_url: str, stop_metrics_only: bool) -> None:
    with suite_with_miner(database_url, "durable") as suite:
        owner = _owner(suite)
        chute = deploy_echo(suite, owner, "dur-" + uuid.uuid4().hex[:6], concurrency=8)
        assert warm(suite, owner, chute["chute_id"])[-1]["status"] == "hot"
        ids = _call_many(suite, owner, chute["slug"])
        assert len(ids) == CALLS
        if stop_metrics_only:
            # The metrics process alone stops (and drains); `up` starts a new one, which is not
            # what this test is about: once the old one has exited, the suite stops.
            metrics = psutil.Process(_metrics_pid(suite))
            metrics.send_signal(signal.SIGTERM)
            metrics.wait(30)
        suite.stop()
        suite.process.wait(60)
        recorded = fetch(
            suite, "SELECT count(*) FROM metrics.invocations WHERE invocation_id = ANY($1)", list(ids)
        )[0][0]
        counted = fetch(
            suite, "SELECT invocation_count FROM registry.chutes WHERE chute_id = $1", chute["chute_id"]
        )[0][0]
        assert (recorded, counted) == (CALLS, CALLS), "".join(suite.stderr_lines[-30:])


def test_stopping_the_suite_right_after_calls_loses_no_record(database_url: str) -> None:
    _stop_right_after_calls(database_url, stop_metrics_only=False)


def test_stopping_metrics_right_after_calls_loses_no_record(database_url: str) -> None:
    _stop_right_after_calls(database_url, stop_metrics_only=True)


def test_a_batch_partly_recorded_already_is_written_once_and_counted_once() -> None:
    """COPY refuses a batch holding an invocation id already recorded (a retried batch that had
    been committed): the idempotent INSERT writes the rest, and only those are counted."""
    from contextlib import asynccontextmanager
    from datetime import UTC, datetime
    from typing import Any

    import asyncpg

    from chutes.registry.v1 import internal_pb2
    from services.metrics import records

    recorded = {"inv1"}
    counted: list[tuple[str, int]] = []

    class Connection:
        async def copy_records_to_table(self, table: str, *, records: Any, columns: Any) -> None:
            if recorded & {record[0] for record in records}:
                raise asyncpg.UniqueViolationError("duplicate key value violates unique constraint")
            recorded.update(record[0] for record in records)

        async def fetch(self, query: str, *columns: Any) -> list[Any]:
            assert "ON CONFLICT (invocation_id) DO NOTHING" in query
            added = [
                {"chute_id": c, "answered": e is None}
                for i, c, e in zip(columns[0], columns[1], columns[10], strict=True)
                if i not in recorded
            ]
            recorded.update(columns[0])
            return added

    class Database:
        def before_close(self, finish: Any) -> None:
            pass

        @asynccontextmanager
        async def raw(self) -> Any:
            yield Connection()

    class Registry:
        async def AddInvocations(self, request: Any, **options: Any) -> Any:
            counted.extend((c.chute_id, c.count) for c in request.counts)
            return internal_pb2.AddInvocationsResponse()

    def record(n: int) -> Any:
        return (f"inv{n}", "c1", "i1", "/echo", None, 200, 1.0, 0.5, 1, 1, None, datetime.now(UTC))

    async def run() -> None:
        sink = records.Records(Database(), Registry())  # type: ignore[arg-type]
        sink._pending = [record(1), record(2), record(3)]
        await sink.drain()
        sink = records.Records(Database(), Registry())  # type: ignore[arg-type]
        sink._pending = [record(4), record(5)]
        await sink.drain()

    asyncio.run(run())
    assert recorded == {"inv1", "inv2", "inv3", "inv4", "inv5"}
    assert counted == [("c1", 2), ("c1", 2)]
