"""Miner means: per instance of a chute, averages over its invocations of the last day, rebuilt on
a schedule by the metrics service from its records and the registry's instances; served as an
HTML index of the vLLM chutes and one chute's means as JSON, CSV or an HTML table
(GET /chutes/miner_means[/{chute_id}[.json|.csv|.html]]).

A suite of its own with the local miner; the echo chute deployed as a vLLM-template chute (the
index lists only those), warmed and called through the gateway.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.metrics import means
from tests.conftest import RunningSuite, suite_with_miner, wait_for
from tests.test_identity import Hotkey, User, admin
from tests.test_invocation_records import fetch
from tests.test_registry import SDK_VERSION
from tests.test_runtime import deploy_echo, invoke, warm

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def suite(database_url: str) -> Iterator[RunningSuite]:
    with suite_with_miner(database_url, "means", miner_means_seconds="1") as running:
        yield running


@pytest.fixture(scope="module")
def owner(suite: RunningSuite) -> User:
    username = "mean" + uuid.uuid4().hex[:8]
    hotkey = Hotkey.new()
    made = admin(suite, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100")
    admin(
        suite, "add-image", "--username", username, "--name", "base", "--tag", "1.0",
        "--chutes-version", SDK_VERSION,
    )  # fmt: skip
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


@pytest.fixture(scope="module")
def served(suite: RunningSuite, owner: User) -> dict[str, Any]:
    """A vLLM-template chute whose one instance answered three calls."""
    chute = deploy_echo(
        suite, owner, "mean-" + uuid.uuid4().hex[:6], standard_template="vllm", revision=REVISION
    )
    assert warm(suite, owner, chute["chute_id"])[-1]["status"] == "hot"
    for n in range(3):
        assert invoke(suite, owner, chute["slug"], "/echo", {"text": f"hi {n}"}).status_code == 200
    return chute


def get(suite: RunningSuite, path: str) -> httpx.Response:
    return httpx.get(f"{suite.gateway}{path}", timeout=10)


def test_one_chute_s_means_as_json_csv_and_html(suite: RunningSuite, served: dict[str, Any]) -> None:
    chute_id = served["chute_id"]
    rows = wait_for(
        "the means of the instance that answered",
        lambda: (found := get(suite, f"/chutes/miner_means/{chute_id}.json").json()) and found,
        15,
    )
    served_by = fetch(
        suite,
        "SELECT DISTINCT i.instance_id, i.miner_hotkey FROM metrics.invocations r"
        " JOIN registry.instances i ON i.instance_id = r.instance_id WHERE r.chute_id = $1",
        chute_id,
    )
    assert rows == [
        {"miner_hotkey": served_by[0]["miner_hotkey"], "instance_id": served_by[0]["instance_id"],
         "avg_tps": 0.0, "avg_output_tokens": 0.0}
    ]  # fmt: skip
    as_json = get(suite, f"/chutes/miner_means/{chute_id}.json")
    assert as_json.headers["content-type"].startswith("application/json")

    as_csv = get(suite, f"/chutes/miner_means/{chute_id}.csv")
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(as_csv.text)))
    assert lines[0] == list(means.CSV_HEADER)
    assert lines[1:] == [[rows[0]["instance_id"], rows[0]["miner_hotkey"], "0.0", "0.0"]]

    for path in (f"/chutes/miner_means/{chute_id}", f"/chutes/miner_means/{chute_id}.html"):
        page = get(suite, path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<th>Hotkey</th><th>Instance ID</th><th>Avg TPS</th><th>Avg Output Tokens</th>" in page.text
        assert f"<td>{rows[0]['instance_id']}</td><td>0.00</td><td>0.00</td>" in page.text


def test_the_index_lists_vllm_chutes_with_links(
    suite: RunningSuite, owner: User, served: dict[str, Any]
) -> None:
    other = deploy_echo(suite, owner, "plain-" + uuid.uuid4().hex[:6])
    page = get(suite, "/chutes/miner_means")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'{suite.gateway}/chutes/miner_means/{served["chute_id"]}"' in page.text
    assert served["name"] in page.text
    assert other["chute_id"] not in page.text


def test_a_known_chute_without_means_is_empty_in_every_format(suite: RunningSuite, owner: User) -> None:
    idle = deploy_echo(suite, owner, "idle-" + uuid.uuid4().hex[:6])
    assert get(suite, f"/chutes/miner_means/{idle['chute_id']}.json").json() == []
    assert get(suite, f"/chutes/miner_means/{idle['chute_id']}.csv").text == ",".join(means.CSV_HEADER) + "\n"
    assert "<td>" not in get(suite, f"/chutes/miner_means/{idle['chute_id']}").text


def test_unknown_chutes_and_formats_are_client_errors(suite: RunningSuite, served: dict[str, Any]) -> None:
    unknown = get(suite, f"/chutes/miner_means/{uuid.uuid4()}.json")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "Chute not found"})
    for bad in ("xml", "json5", ""):
        answer = get(suite, f"/chutes/miner_means/{served['chute_id']}.{bad}")
        assert answer.status_code == 400, bad
        assert answer.headers["content-type"].startswith("application/json")
        assert "use .json, .csv, .html or no extension" in answer.json()["detail"]


def test_extensions_split_at_the_last_dot() -> None:
    assert means.split_extension("abc.CSV") == ("abc", "csv")
    assert means.split_extension("abc") == ("abc", None)
    assert means.split_extension("abc.") == ("abc", "")
    assert means.split_extension("a.b.json") == ("a.b", "json")
