"""`chutes-suite admin set-job-quota` on the shared suite: the quota it writes is the one
POST /jobs/{chute_id}/{method} enforces (spec 5.2)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import CHUTES_SUITE, RunningSuite
from tests.test_identity import admin, new_user
from tests.test_jobs import create, created, deploy_job_chute, deployer
from tests.test_registry import detail


@pytest.fixture(scope="module")
def http(suite: RunningSuite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=suite.gateway, timeout=30) as client:
        yield client


def test_a_quota_of_one_refuses_the_second_job_of_the_day(suite: RunningSuite, http: httpx.Client) -> None:
    user = deployer(suite)
    chute_id = deploy_job_chute(http, user, "quota")["chute_id"]
    other_id = deploy_job_chute(http, user, "other")["chute_id"]

    answer = admin(
        suite, "set-job-quota", "--username", user.username, "--chute-id", chute_id, "--quota", "1"
    )
    assert answer == {"user_id": user.user_id, "username": user.username, "chute_id": chute_id, "quota": 1}
    created(http, user, chute_id)
    assert detail(create(http, user, chute_id), 429) == (
        f"Daily job quota exceeded: 1 of 1 jobs today for chute {chute_id}"
    )
    created(http, user, other_id)  # the quota is per chute: the default still applies there

    # Setting it again replaces it.
    admin(suite, "set-job-quota", "--username", user.username, "--chute-id", chute_id, "--quota", "2")
    created(http, user, chute_id)
    assert detail(create(http, user, chute_id), 429).startswith("Daily job quota exceeded: 2 of 2 ")

    # A total a day ("global") caps every chute.
    admin(suite, "set-job-quota", "--username", user.username, "--chute-id", "global", "--quota", "3")
    assert detail(create(http, user, other_id), 429) == (
        "Daily job quota exceeded: 3 of 3 jobs today in total"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--username", "nobody-" + uuid.uuid4().hex[:8], "--quota", "1"], "no user named"),
        (["--chute-id", "not-a-uuid", "--quota", "1"], "is not a chute UUID"),
        (["--quota", "-1"], "--quota must be 0"),
    ],
)
def test_bad_arguments_exit_1(suite: RunningSuite, args: list[str], error: str) -> None:
    if "--username" not in args:
        args = ["--username", new_user(suite).username, *args]
    result = subprocess.run(
        [CHUTES_SUITE, "admin", "set-job-quota", *args], env=suite.env, capture_output=True, text=True
    )
    assert result.returncode == 1 and error in result.stderr, result.stderr
