"""TEE evidence end to end: `GET /chutes/{chute}/evidence?nonce=` through the gateway, from real
instances on the local miner's software TEE (chutes/evidence.py), verified by the attestation
service (services/attestation/), and checked again here as a client would.

The suite runs on a machine without TDX, so `up` enables the software TEE: the local miner
registers its node key and runs TEE chutes; every evidence item names trust root `software`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chutes.tee import SoftwareQuote, bind_report_data
from services.attestation.software_tee import SoftwareTrust
from services.attestation.trust import Trust
from services.attestation.verify import Evidence, verify_evidence
from tests.conftest import RunningSuite, free_port, suite_with_miner, wait_for
from tests.test_chute_hosts import sql
from tests.test_identity import Hotkey, User, admin
from tests.test_invocation_records import fetch
from tests.test_registry import key
from tests.test_runtime import ECHO_CODE, deploy_echo, warm

NONCE = os.urandom(32).hex()


@pytest.fixture(scope="module")
def suite(database_url: str) -> Iterator[RunningSuite]:
    with suite_with_miner(database_url, "evidence") as running:
        yield running


@pytest.fixture(scope="module")
def owner(suite: RunningSuite) -> User:
    username = "tee" + uuid.uuid4().hex[:8]
    hotkey = Hotkey.new()
    made = admin(
        suite, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100",
        "--role", "unlimited_dev",
    )  # fmt: skip
    admin(
        suite,
        "add-image",
        "--username",
        username,
        "--name",
        "base",
        "--tag",
        "1.0",
        "--chutes-version",
        "0.6.9",
    )
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


def active_instances(suite: RunningSuite, chute_id: str) -> list[Any]:
    return fetch(
        suite,
        "SELECT instance_id, port FROM registry.instances WHERE chute_id = $1 AND active AND verified"
        " ORDER BY created_at",
        chute_id,
    )


@pytest.fixture(scope="module")
def tee_chute(suite: RunningSuite, owner: User) -> dict[str, Any]:
    """A TEE echo chute with two routable instances (load makes the scheduler add the second)."""
    chute = deploy_echo(
        suite, owner, "attested-" + uuid.uuid4().hex[:6], tee=True, concurrency=1, max_instances=2,
        scaling_threshold=0.5,
    )  # fmt: skip
    assert warm(suite, owner, chute["chute_id"])[-1]["status"] == "hot"
    stop = threading.Event()

    def call() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                http.post(
                    f"{suite.gateway}/count",
                    json={"to": 4},
                    headers={"Host": f"{chute['slug']}.localhost", **key(owner)},
                )

    callers = [threading.Thread(target=call) for _ in range(2)]
    for caller in callers:
        caller.start()
    try:
        wait_for(
            "two routable instances", lambda: len(active_instances(suite, chute["chute_id"])) == 2, 60, 0.2
        )
    finally:
        stop.set()
        for caller in callers:
            caller.join()
    return chute


def evidence(suite: RunningSuite, chute: str, nonce: str | None = NONCE, **headers: str) -> httpx.Response:
    params = {} if nonce is None else {"nonce": nonce}
    return httpx.get(f"{suite.gateway}/chutes/{chute}/evidence", params=params, headers=headers, timeout=30)


def test_every_instance_gives_evidence_bound_to_the_nonce_and_verified(
    suite: RunningSuite, owner: User, tee_chute: dict[str, Any]
) -> None:
    response = evidence(suite, tee_chute["chute_id"], **key(owner))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["failed_instance_ids"] == [], [line for line in suite.stderr_lines if "evidence" in line]
    items = {item["instance_id"]: item for item in body["evidence"]}
    assert set(items) == {row["instance_id"] for row in active_instances(suite, tee_chute["chute_id"])}
    assert len(items) == 2
    for item in items.values():
        assert (item["verified"], item["trust_root"], item["reason"]) == (True, "software", "")
        assert item["gpu_evidence"] == []
        # What a client checks itself: the quote binds its nonce and the item's certificate,
        # and measures the code that was deployed.
        quote = SoftwareQuote.parse(base64.b64decode(item["quote"]))
        certificate = base64.b64decode(item["certificate"])
        assert quote.report_data == bind_report_data(bytes.fromhex(NONCE), certificate)
        assert quote.measurements["code"] == hashlib.sha256(ECHO_CODE.encode()).hexdigest()
    # Each instance binds its own key: evidence cannot be moved from one instance to another.
    assert len({item["certificate"] for item in items.values()}) == 2

    # The same evidence proves nothing for another nonce, nor once a byte changes.
    item = next(iter(items.values()))
    raw = Evidence.from_base64(item["quote"], item["certificate"])
    node_key = SoftwareQuote.parse(raw.quote).node_key
    trust = Trust(software=SoftwareTrust(enabled=True, node_keys={"node": node_key}))
    assert verify_evidence(raw, bytes.fromhex(NONCE), trust).verified
    other = verify_evidence(raw, os.urandom(32), trust)
    assert not other.verified and other.reason
    tampered = bytearray(raw.quote)
    tampered[120] ^= 1  # inside the code measurement
    broken = verify_evidence(Evidence(bytes(tampered), raw.certificate), bytes.fromhex(NONCE), trust)
    assert not broken.verified and broken.reason
    assert base64.b64decode(item["certificate"]) == raw.certificate


def test_an_instance_that_cannot_answer_is_listed_not_an_error(
    suite: RunningSuite, owner: User, tee_chute: dict[str, Any]
) -> None:
    first, second = active_instances(suite, tee_chute["chute_id"])
    # The second instance's evidence endpoint is made unreachable: nothing listens there.
    database_url = suite.env["CHUTES_DATABASE_URL"]
    sql(
        database_url,
        "UPDATE registry.instances SET port = $1 WHERE instance_id = $2",
        free_port(),
        second["instance_id"],
    )
    try:
        response = evidence(suite, tee_chute["chute_id"], **key(owner))
    finally:
        sql(
            database_url,
            "UPDATE registry.instances SET port = $1 WHERE instance_id = $2",
            second["port"],
            second["instance_id"],
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["failed_instance_ids"] == [second["instance_id"]]
    assert [item["instance_id"] for item in body["evidence"]] == [first["instance_id"]]
    assert body["evidence"][0]["verified"] is True


def test_the_real_routes_checks_in_order(suite: RunningSuite, owner: User, tee_chute: dict[str, Any]) -> None:
    plain = deploy_echo(suite, owner, "plain-" + uuid.uuid4().hex[:6])
    missing = evidence(suite, tee_chute["chute_id"], nonce=None, **key(owner))
    assert missing.status_code == 422, missing.text
    assert missing.json()["detail"][0]["loc"] == ["query", "nonce"]
    # Hidden from anonymous callers and unknown chutes are both 404 (checked before the nonce).
    for chute, headers in ((tee_chute["chute_id"], {}), (str(uuid.uuid4()), key(owner))):
        hidden = evidence(suite, chute, nonce="zz", **headers)
        assert (hidden.status_code, hidden.json()) == (404, {"detail": "Chute not found"})
    for nonce, detail in (
        ("", "Nonce is required"),
        ("ab" * 10, "Nonce must be exactly 64 hex characters (32 bytes), got 20"),
        ("zz" * 32, "Nonce must be a valid hexadecimal string"),
    ):
        bad = evidence(suite, tee_chute["chute_id"], nonce=nonce, **key(owner))
        assert (bad.status_code, bad.json()) == (400, {"detail": detail})
    not_tee = evidence(suite, plain["chute_id"], **key(owner))
    assert (not_tee.status_code, not_tee.json()) == (
        400,
        {"detail": f"Chute {plain['chute_id']} is not TEE-enabled"},
    )


def test_the_61st_call_in_a_minute_is_429(suite: RunningSuite) -> None:
    started = time.monotonic()
    statuses = [evidence(suite, str(uuid.uuid4())).status_code for _ in range(61)]
    assert time.monotonic() - started < 60
    # Earlier tests of this module used some of the minute's 60 calls.
    assert statuses[-1] == 429 and set(statuses) == {404, 429}
    limited = evidence(suite, str(uuid.uuid4()))
    assert (limited.status_code, limited.json()) == (429, {"detail": "Rate limit exceeded. Try again later."})
