"""Invocation records: every call to a chute host through the gateway becomes one row in the
metrics schema (from Envoy's gRPC access log), and the chute's invocation_count follows them.

A suite of its own with the local miner (tests/test_runtime.py): the echo chute deployed, warmed
and called, and a second chute called cold (503).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import RunningSuite, suite_with_miner, wait_for
from tests.test_identity import Hotkey, User, admin
from tests.test_registry import SDK_VERSION, key
from tests.test_runtime import deploy_echo, invoke, warm


@pytest.fixture(scope="module")
def suite(database_url: str) -> Iterator[RunningSuite]:
    # Four GPUs: the cold call below makes its chute wanted, so it takes a GPU of its own; with the
    # usual two, the next test's chute would wait for one to scale to zero (300 s idle).
    with suite_with_miner(database_url, "records", local_miner_gpus="pro_6000:4") as running:
        yield running


@pytest.fixture(scope="module")
def owner(suite: RunningSuite) -> User:
    username = "rec" + uuid.uuid4().hex[:8]
    hotkey = Hotkey.new()
    made = admin(suite, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100")
    admin(
        suite, "add-image", "--username", username, "--name", "base", "--tag", "1.0",
        "--chutes-version", SDK_VERSION,
    )  # fmt: skip
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


def fetch(suite: RunningSuite, query: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        connection = await asyncpg.connect(suite.env["CHUTES_DATABASE_URL"])
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(run())


def test_each_invocation_is_recorded_and_counted(suite: RunningSuite, owner: User) -> None:
    chute = deploy_echo(suite, owner, "rec-" + uuid.uuid4().hex[:6])
    cold = deploy_echo(suite, owner, "recc-" + uuid.uuid4().hex[:6])
    assert warm(suite, owner, chute["chute_id"])[-1]["status"] == "hot"

    answered = [invoke(suite, owner, chute["slug"], "/echo", {"text": f"hi {i}"}) for i in range(5)]
    assert [r.status_code for r in answered] == [200] * 5
    refused = invoke(suite, owner, cold["slug"], "/echo?x=1", {"text": "cold"})
    assert refused.status_code == 503
    ids = {r.headers["x-chutes-invocationid"] for r in [*answered, refused]}
    assert len(ids) == 6

    rows = wait_for(
        "six records",
        lambda: (
            len(
                found := fetch(
                    suite, "SELECT * FROM metrics.invocations WHERE invocation_id = ANY($1)", list(ids)
                )
            )
            == 6
            and found
        ),
        10,
    )
    by_id = {row["invocation_id"]: row for row in rows}
    for response in answered:
        row = by_id[response.headers["x-chutes-invocationid"]]
        assert (row["chute_id"], row["status"], row["path"], row["user_id"], row["error"]) == (
            chute["chute_id"], 200, "/echo", owner.user_id, None,
        )  # fmt: skip
        assert row["instance_id"] and row["duration_ms"] > 0 and 0 < row["ttfb_ms"] <= row["duration_ms"]
        assert row["bytes_in"] > 0 and row["bytes_out"] > 0 and row["started_at"] is not None
    row = by_id[refused.headers["x-chutes-invocationid"]]
    assert (row["chute_id"], row["status"], row["path"], row["user_id"], row["instance_id"]) == (
        cold["chute_id"], 503, "/echo", owner.user_id, None,
    )  # fmt: skip
    assert row["error"] == "no_healthy_upstream" and row["duration_ms"] > 0 and row["bytes_out"] > 0

    # The count follows the records: the 5 calls an instance answered, not the cold 503.
    wait_for(
        "the count",
        lambda: (
            fetch(
                suite, "SELECT invocation_count FROM registry.chutes WHERE chute_id = $1", chute["chute_id"]
            )[0][0]
            == 5
        ),
        10,
    )
    got = httpx.get(f"{suite.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).json()
    assert got["invocation_count"] == 5
    assert (
        httpx.get(f"{suite.gateway}/chutes/{cold['chute_id']}", headers=key(owner)).json()["invocation_count"]
        == 0
    )


def test_token_usage_in_an_answer_is_recorded(suite: RunningSuite, owner: User) -> None:
    chute = deploy_echo(suite, owner, "tok-" + uuid.uuid4().hex[:6])
    assert warm(suite, owner, chute["chute_id"])[-1]["status"] == "hot"
    # A JSON answer that carries an OpenAI-shaped usage (the echo returns what it was sent).
    whole = invoke(
        suite, owner, chute["slug"], "/echo", {"usage": {"prompt_tokens": 7, "completion_tokens": 5}}
    )
    # A stream that ends with a usage event, as an LLM's does: 6 "tokens" 50 ms apart.
    streamed = invoke(suite, owner, chute["slug"], "/count", {"to": 6, "usage": True})
    plain = invoke(suite, owner, chute["slug"], "/echo", {"text": "no usage here"})
    assert [r.status_code for r in (whole, streamed, plain)] == [200, 200, 200]
    assert streamed.text.count("data:") == 7 and '"completion_tokens": 6' in streamed.text  # unchanged
    ids = [r.headers["x-chutes-invocationid"] for r in (whole, streamed, plain)]
    rows = wait_for(
        "three records",
        lambda: (
            len(found := fetch(suite, "SELECT * FROM metrics.invocations WHERE invocation_id = ANY($1)", ids))
            == 3
            and {row["invocation_id"]: row for row in found}
        ),
        10,
    )
    assert (rows[ids[0]]["input_tokens"], rows[ids[0]]["output_tokens"]) == (7, 5)
    stream_row = rows[ids[1]]
    assert (stream_row["input_tokens"], stream_row["output_tokens"]) == (1, 6)
    assert 0 < stream_row["first_token_ms"] < stream_row["duration_ms"]
    # 6 tokens over ~0.3 s of stream after the first chunk: ~20 per second.
    assert 5 < stream_row["tokens_per_second"] < 60
    assert [rows[ids[2]][column] for column in ("input_tokens", "output_tokens", "first_token_ms")] == [
        None
    ] * 3


def test_a_batch_that_fails_to_write_is_retried_and_counted_once() -> None:
    from contextlib import asynccontextmanager
    from datetime import UTC, datetime

    from chutes.registry.v1 import internal_pb2
    from services.metrics import records

    written: list[list[Any]] = []
    counted: list[Any] = []

    class Connection:
        async def copy_records_to_table(self, table: str, *, records: Any, columns: Any) -> None:
            written.append([record[0] for record in records])

    class FlakyDatabase:
        failures = 2

        def before_close(self, finish: Any) -> None:
            pass

        @asynccontextmanager
        async def raw(self) -> Any:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("the database restarts")
            yield Connection()

    class Registry:
        async def AddInvocations(self, request: Any, **options: Any) -> Any:
            counted.append(request)
            return internal_pb2.AddInvocationsResponse()

    def record(n: int, error: str | None) -> Any:
        return (f"inv{n}", "c1", None, "/echo", None, 200, 1.0, None, 1, 1, error, datetime.now(UTC))

    async def run() -> None:
        sink = records.Records(FlakyDatabase(), Registry())  # type: ignore[arg-type]
        sink._pending = [record(1, None), record(2, None), record(3, "no_healthy_upstream")]
        # What a stop does: write everything pending (retrying), then send the counts.
        await sink.drain()

    asyncio.run(run())
    assert written == [["inv1", "inv2", "inv3"]]
    assert [(c.chute_id, c.count) for r in counted for c in r.counts] == [("c1", 2)]
