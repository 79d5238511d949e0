"""A deployed chute answers at `{slug}.localhost` on the gateway, routed by the registry (xDS).

Through `chutes-suite up`: the chute is deployed over REST, its instance is a real `chutes run`
process of examples/echo_chute.py, and the instance row is written as a miner's launch writes it
(no miner runs in this test). What is checked is what a caller notices: the instance's answers
and streams through the gateway host, 503 JSON while the chute has no routable instance, 404 JSON
for an unknown host and after deletion.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import RunningSuite
from tests.test_chute_run import ChuteProcess, start_chute
from tests.test_identity import User
from tests.test_registry import deploy_body, deployed, http, image, key, owner  # noqa: F401 (fixtures)


def sql(database_url: str, query: str, *args: Any) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(query, *args)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def echo_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChuteProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    running = start_chute("examples/echo_chute:chute", env, tmp_path_factory.mktemp("instance"))
    try:
        yield running
    finally:
        running.stop()


def call(
    suite: RunningSuite,
    host: str,
    path: str,
    body: dict[str, Any],
    deadline: float = 5.0,
    auth: dict[str, str] | None = None,
) -> httpx.Response:
    """POST through the gateway to a chute host (with the credentials in `auth`), waiting up to
    `deadline` for routing to settle (an answer other than `503 no instances` / `404 no chute`)."""
    end = time.monotonic() + deadline
    while True:
        headers = {"Host": host, **(auth or {})}
        response = httpx.post(f"{suite.gateway}{path}", json=body, headers=headers, timeout=10)
        if response.status_code not in (503, 404) or time.monotonic() > end:
            return response
        time.sleep(0.02)


def test_a_chute_is_called_through_its_host(
    suite: RunningSuite,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    image: str,  # noqa: F811
    database_url: str,
    echo_instance: ChuteProcess,
) -> None:
    chute = deployed(http, owner, deploy_body("hosted-" + uuid.uuid4().hex[:6], image))
    host = f"{chute['slug']}.localhost"

    cold = httpx.post(
        f"{suite.gateway}/echo", json={"text": "hi"}, headers={"Host": host, **key(owner)}, timeout=10
    )
    assert cold.status_code == 503, cold.text
    assert cold.json() == {"detail": f"No instances available (yet) for chute_id={chute['chute_id']}"}
    assert cold.headers["x-chutes-invocationid"]

    port = int(echo_instance.url.rsplit(":", 1)[1])
    instance_id = str(uuid.uuid4())
    sql(
        database_url,
        "INSERT INTO registry.instances (instance_id, chute_id, version, host, port, active, verified)"
        " VALUES ($1, $2, $3, '127.0.0.1', $4, true, true)",
        instance_id,
        chute["chute_id"],
        chute["version"],
        port,
    )
    answered = call(suite, host, "/echo", {"text": "hi"}, auth=key(owner))
    assert answered.status_code == 200, answered.text
    assert answered.json()["echo"] == {"text": "hi"}
    assert answered.headers["x-chutes-invocationid"]
    assert http.get(f"/chutes/{chute['chute_id']}", headers=key(owner)).json()["hot"] is True

    with httpx.stream(
        "POST", f"{suite.gateway}/count", json={"to": 3}, headers={"Host": host, **key(owner)}, timeout=10
    ) as stream:
        assert stream.status_code == 200
        events = [line for line in stream.iter_lines() if line.startswith("data:")]
    assert events == ['data: {"n": 1}', 'data: {"n": 2}', 'data: {"n": 3}']

    # The instance stops taking traffic as soon as its row says so.
    sql(database_url, "UPDATE registry.instances SET active = false WHERE instance_id = $1", instance_id)
    deadline = time.monotonic() + 5
    while (
        gone := call(suite, host, "/echo", {"text": "hi"}, deadline=0, auth=key(owner))
    ).status_code != 503:
        assert time.monotonic() < deadline, gone.text
        time.sleep(0.02)

    deleted = http.delete(f"/chutes/{chute['chute_id']}", headers=key(owner))
    assert deleted.status_code == 200, deleted.text
    deadline = time.monotonic() + 5
    while (
        unknown := call(suite, host, "/echo", {"text": "hi"}, deadline=0, auth=key(owner))
    ).status_code != 404:
        assert time.monotonic() < deadline, unknown.text
        time.sleep(0.02)
    assert unknown.json() == {"detail": "No matching chute found!"}


def test_an_unknown_host_is_a_json_404(suite: RunningSuite, owner: User) -> None:  # noqa: F811
    response = httpx.get(
        f"{suite.gateway}/anything", headers={"Host": "no-such-chute.localhost", **key(owner)}, timeout=10
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "No matching chute found!"}


def test_rest_routes_are_unchanged_beside_chute_hosts(suite: RunningSuite) -> None:
    listed = httpx.get(f"{suite.gateway}/chutes/?limit=1", timeout=10)
    assert listed.status_code == 200 and "items" in listed.json()
