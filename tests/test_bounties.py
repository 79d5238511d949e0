"""Bounties (issue 13, item 1) through the real gateway, on a suite with its local miner: a cold
call or a warmup of a chute without instances puts a bounty on it, the first instance to become
routable claims it, billing admins raise one by hand, expired ones disappear without a cron.
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
from tests.test_identity import Hotkey, User, admin, new_user
from tests.test_registry import SDK_VERSION, key
from tests.test_runtime import deploy_echo, invoke

#: IncreaseChuteBounty's answer when the chute may not have a bounty (bounty_existed and amount
#: are null: absent, as every unset optional field).
NO_BOUNTY = {"bounty_created": False, "notification_sent": False}
#: A node selector the local miner (two simulated pro_6000) cannot take: the chute stays cold.
UNPLACEABLE = {"gpu_count": 1, "min_vram_gb_per_gpu": 80, "include": ["h100"]}


@pytest.fixture(scope="module")
def runtime(database_url: str) -> Iterator[RunningSuite]:
    with suite_with_miner(database_url, "bounties") as running:
        yield running


@pytest.fixture(scope="module")
def owner(runtime: RunningSuite) -> User:
    """A user with a balance and an image of their own (what deploy_echo deploys on)."""
    username = "b" + uuid.uuid4().hex[:10]
    hotkey = Hotkey.new()
    made = admin(runtime, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100")
    user = User(str(made["user_id"]), username, str(made["api_key"]), hotkey)
    admin(runtime, "add-image", "--username", user.username, "--name", "base", "--tag", "1.0",
          "--chutes-version", SDK_VERSION)  # fmt: skip
    return user


@pytest.fixture(scope="module")
def billing(runtime: RunningSuite) -> User:
    return new_user(runtime, "billing_admin")


def bounties(runtime: RunningSuite) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{runtime.gateway}/bounties/")
    assert response.status_code == 200, response.text
    return {b["chute_id"]: b for b in response.json()}


def increase(runtime: RunningSuite, user: User | None, chute_id: str, query: str = "") -> httpx.Response:
    headers = key(user) if user else {}
    return httpx.get(f"{runtime.gateway}/bounties/{chute_id}/increase{query}", headers=headers)


def sql(runtime: RunningSuite, statement: str, *args: Any) -> Any:
    async def run() -> Any:
        connection = await asyncpg.connect(runtime.env["CHUTES_DATABASE_URL"])
        try:
            return await connection.fetch(statement, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


def test_a_cold_call_creates_a_bounty_the_first_routable_instance_claims(
    runtime: RunningSuite, owner: User, billing: User
) -> None:
    chute = deploy_echo(runtime, owner, "bounty-" + uuid.uuid4().hex[:6])
    chute_id = chute["chute_id"]
    assert chute_id not in bounties(runtime)

    assert invoke(runtime, owner, chute["slug"], "/echo", {"text": "hi"}).status_code == 503
    bounty = wait_for("a bounty on the cold chute", lambda: bounties(runtime).get(chute_id) or {}, timeout=10)
    assert set(bounty) == {"chute_id", "bounty_amount", "seconds_elapsed", "time_remaining", "created_at"}
    assert bounty["bounty_amount"] >= 100 and bounty["seconds_elapsed"] >= 0
    assert 3500 < bounty["time_remaining"] <= 3600  # a private chute's bounty lasts an hour
    assert isinstance(bounty["created_at"], float)
    # Miners heard of it (once) through the outbox.
    [event] = sql(
        runtime,
        "SELECT payload FROM registry.outbox WHERE kind = 'bounty_change' AND payload->>'chute_id' = $1",
        chute_id,
    )
    assert '"bounty": 100' in event["payload"]

    wait_for(
        "the chute answers",
        lambda: invoke(runtime, owner, chute["slug"], "/echo", {"text": "hi"}).status_code == 200,
        timeout=60,
    )
    assert chute_id not in bounties(runtime)  # claimed by the instance that became routable
    # After a claim the chute cools down: even a billing admin gets no new bounty for 600 s.
    assert increase(runtime, billing, chute_id).json() == NO_BOUNTY
    assert httpx.delete(f"{runtime.gateway}/chutes/{chute_id}", headers=key(owner)).status_code == 200


def test_a_warmup_of_a_chute_without_instances_creates_a_bounty(runtime: RunningSuite, owner: User) -> None:
    chute = deploy_echo(runtime, owner, "warmb-" + uuid.uuid4().hex[:6], node_selector=UNPLACEABLE)
    response = httpx.get(
        f"{runtime.gateway}/chutes/warmup/{chute['chute_id']}?quick=true", headers=key(owner), timeout=10
    )
    assert response.status_code == 200 and response.json()["status"] == "cold"
    # The dashboard's snapshot shows the bounty this warmup created (amount and boost).
    snapshot_bounty = response.json()["bounty"]
    assert snapshot_bounty["amount"] >= 100 and 1.5 <= snapshot_bounty["boost"] <= 2.5
    assert chute["chute_id"] in bounties(runtime)
    # The chute carries its bounty (amount and the multiplier's bounty boost).
    got = httpx.get(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).json()
    assert got["bounty"] >= 100 and 1.5 <= got["compute_multiplier_factors"]["bounty_boost"] <= 2.5


def test_billing_admins_raise_bounties_and_boosts(runtime: RunningSuite, owner: User, billing: User) -> None:
    chute = deploy_echo(runtime, owner, "raise-" + uuid.uuid4().hex[:6], node_selector=UNPLACEABLE)
    chute_id = chute["chute_id"]

    assert increase(runtime, None, chute_id).status_code == 401
    refused = increase(runtime, owner, chute_id)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Only billing admins may perform this action"}
    missing = increase(runtime, billing, str(uuid.uuid4()))
    assert missing.status_code == 404 and missing.json() == {"detail": "Chute not found"}
    assert increase(runtime, billing, "not-a-chute").status_code == 404
    bad = increase(runtime, billing, chute_id, "?boost=lots")  # FastAPI: a query that is no float is 422
    assert bad.status_code == 422 and "detail" in bad.json()

    first = increase(runtime, billing, chute_id, "?boost=2.5")
    assert first.status_code == 200, first.text
    assert first.json() == {
        "bounty_created": True,
        "bounty_existed": False,
        "notification_sent": True,
        "amount": 100,
    }
    assert 3500 < bounties(runtime)[chute_id]["time_remaining"] <= 3600
    again = increase(runtime, billing, chute_id, "?boost=9").json()  # out of range: ignored
    assert again["bounty_created"] is False and again["bounty_existed"] is True
    assert again["notification_sent"] is False  # one notification per chute per 30 s
    assert again["amount"] >= 100
    got = httpx.get(f"{runtime.gateway}/chutes/{chute_id}", headers=key(owner)).json()
    assert got["compute_multiplier_factors"]["manual_boost"] == 2.5

    # A disabled chute gets no bounty.
    other = deploy_echo(runtime, owner, "off-" + uuid.uuid4().hex[:6], node_selector=UNPLACEABLE)
    disabled = httpx.put(
        f"{runtime.gateway}/chutes/{other['chute_id']}", json={"disabled": True}, headers=key(owner)
    )
    assert disabled.status_code == 200, disabled.text
    assert increase(runtime, billing, other["chute_id"]).json() == NO_BOUNTY


def test_expired_bounties_are_gone_without_a_cron(runtime: RunningSuite, owner: User, billing: User) -> None:
    chute = deploy_echo(runtime, owner, "expire-" + uuid.uuid4().hex[:6], node_selector=UNPLACEABLE)
    assert increase(runtime, billing, chute["chute_id"]).json()["bounty_created"] is True
    sql(runtime, "UPDATE registry.bounties SET expires_at = now() WHERE chute_id = $1", chute["chute_id"])
    assert chute["chute_id"] not in bounties(runtime)  # reads filter expired ones at once
    got = httpx.get(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).json()
    assert got.get("bounty") is None and "bounty_boost" not in got["compute_multiplier_factors"]
    wait_for(
        "the scheduler drops the expired row",
        lambda: not sql(runtime, "SELECT 1 FROM registry.bounties WHERE chute_id = $1", chute["chute_id"]),
        timeout=5,
    )
