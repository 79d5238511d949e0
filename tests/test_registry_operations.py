"""Registry operations of issue 13 through the real gateway: boosted and affine-available chutes
(item 2), make_public (item 3), easy vLLM and diffusion deploys (item 4), hf_info for miners
(item 5) and the manual boost on GET and list (item 6). Bounties and their claims, which need a
miner, are in test_bounties.py.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import RunningSuite
from tests.test_identity import Hotkey, User, admin, new_user
from tests.test_registry import SDK_VERSION, deploy_body, key

REVISION = "0123456789abcdef0123456789abcdef01234567"
VLLM_CODE = f'''from chutes.chute import NodeSelector
from chutes.chute.template.vllm import build_vllm_chute

chute = build_vllm_chute(
    username="someone",
    model_name="org/some-model",
    revision="{REVISION}",
    node_selector=NodeSelector(gpu_count=1),
)
'''


@pytest.fixture(scope="module")
def http(suite: RunningSuite) -> httpx.Client:
    with httpx.Client(base_url=suite.gateway, timeout=30) as client:
        yield client  # type: ignore[misc]


def make_user(suite: RunningSuite, *options: str, hotkey: bool = True, balance: str = "100") -> User:
    """A user with a balance, these roles/netuids (`--role x`, `--netuid n`) and an image."""
    username = "o" + uuid.uuid4().hex[:10]
    made_hotkey = Hotkey.new()
    args = ["create-user", "--username", username, "--balance", balance, *options]
    if hotkey:
        args += ["--hotkey", made_hotkey.ss58]
    made = admin(suite, *args)
    admin(suite, "add-image", "--username", username, "--name", "base", "--tag", "1.0",
          "--chutes-version", SDK_VERSION)  # fmt: skip
    return User(str(made["user_id"]), username, str(made["api_key"]), made_hotkey)


def deployed(http: httpx.Client, user: User, name: str, **changes: Any) -> dict[str, Any]:
    body = deploy_body(name, f"{user.username}/base:1.0", **changes)
    response = http.post(
        "/chutes/?accept_fee=true", json=body, headers={**key(user), "X-Chutes-Version": SDK_VERSION}
    )
    assert response.status_code == 200, response.text
    chute: dict[str, Any] = response.json()
    return chute


def sql(suite: RunningSuite, statement: str, *args: Any) -> Any:
    async def run() -> Any:
        connection = await asyncpg.connect(suite.env["CHUTES_DATABASE_URL"])
        try:
            return await connection.fetch(statement, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


# ---- item 2: boosted and affine-available chutes -----------------------------------------------


def test_boosted_lists_automatic_and_manual_boosts_above_one(http: httpx.Client, suite: RunningSuite) -> None:
    owner = make_user(suite)
    billing = new_user(suite, "billing_admin")
    manual, automatic, plain = (deployed(http, owner, f"boost{i}-{uuid.uuid4().hex[:6]}") for i in range(3))
    raised = http.get(f"/bounties/{manual['chute_id']}/increase?boost=2.0", headers=key(billing))
    assert raised.status_code == 200, raised.text
    assert (
        http.get(f"/bounties/{plain['chute_id']}/increase?boost=1.0", headers=key(billing)).status_code == 200
    )
    sql(suite, "UPDATE registry.chutes SET boost = 1.4 WHERE chute_id = $1", automatic["chute_id"])

    response = http.get("/chutes/boosted")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    listed = {b["chute_id"]: b for b in response.json()}
    assert listed[manual["chute_id"]] == {
        "chute_id": manual["chute_id"],
        "name": manual["name"],
        "manual_boost": 2.0,
    }
    assert listed[automatic["chute_id"]] == {
        "chute_id": automatic["chute_id"],
        "name": automatic["name"],
        "boost": 1.4,
    }
    assert plain["chute_id"] not in listed  # a manual boost of 1.0 boosts nothing

    # GET and list carry the manual boost in the multiplier (item 6).
    got = http.get(f"/chutes/{manual['chute_id']}", headers=key(owner)).json()
    assert got["compute_multiplier_factors"]["manual_boost"] == 2.0
    product = 1.0
    for factor in got["compute_multiplier_factors"].values():
        product *= factor
    assert got["effective_compute_multiplier"] == pytest.approx(product)
    [item] = http.get(f"/chutes/?name={manual['name']}", headers=key(owner)).json()["items"]
    # (The billing admin's call also put a bounty on it, whose boost grows by the second.)
    assert item["compute_multiplier_factors"].keys() == got["compute_multiplier_factors"].keys()
    assert item["compute_multiplier_factors"]["manual_boost"] == 2.0 and item["bounty"] >= 100
    assert item["effective_compute_multiplier"] == pytest.approx(product, rel=1e-3)
    assert (
        "manual_boost"
        not in http.get(f"/chutes/{plain['chute_id']}", headers=key(owner)).json()[
            "compute_multiplier_factors"
        ]
    )


def test_affine_available_lists_chutes_of_qualifying_owners(http: httpx.Client, suite: RunningSuite) -> None:
    # Registered on netuid 120 (hotkey + netuid) with a balance: available.
    registered = make_user(suite, "--role", "unlimited_dev", "--netuid", "120")
    # A balance but no registration: not available.
    unregistered = make_user(suite, "--role", "unlimited_dev")
    # A subnet admin without a hotkey: available through the admin bit.
    subnet_admin = make_user(suite, "--role", "subnet_admin", "--netuid", "120", hotkey=False)
    tag = uuid.uuid4().hex[:6]
    one = deployed(http, registered, f"affine-one-{tag}")
    two = deployed(http, unregistered, f"affine-two-{tag}")
    three = deployed(http, subnet_admin, f"affine-three-{tag}")
    sql(
        suite,
        "INSERT INTO registry.instances (instance_id, chute_id, active, verified)"
        " VALUES ($1, $2, true, true)",
        str(uuid.uuid4()),
        three["chute_id"],
    )

    response = http.get("/chutes/affine_available")
    assert response.status_code == 200
    listed = {c["chute_id"]: c for c in response.json()}
    assert listed[one["chute_id"]] == {
        "chute_id": one["chute_id"], "user_id": registered.user_id, "name": one["name"],
        "hotkey": registered.hotkey.ss58, "has_active_instance": False,
    }  # fmt: skip
    assert two["chute_id"] not in listed
    assert listed[three["chute_id"]] == {
        "chute_id": three["chute_id"], "user_id": subnet_admin.user_id, "name": three["name"],
        "hotkey": "", "has_active_instance": True,
    }  # fmt: skip


# ---- item 5: hf_info ----------------------------------------------------------------------------


def test_hf_info_is_for_miners_and_reads_the_model_from_the_code(
    http: httpx.Client, suite: RunningSuite
) -> None:
    owner = make_user(suite)
    miner = new_user(suite, "miner")
    pinned = deployed(http, owner, f"hfmodel-{uuid.uuid4().hex[:6]}", code=VLLM_CODE, revision=REVISION)
    unpinned = deployed(
        http, owner, f"hfloose-{uuid.uuid4().hex[:6]}", code=VLLM_CODE.replace("revision=", "r=")
    )
    plain = deployed(http, owner, f"hfnone-{uuid.uuid4().hex[:6]}")

    path = f"/chutes/{pinned['chute_id']}/hf_info"
    assert http.get(path).status_code == 401
    refused = http.get(path, headers=key(owner))
    assert refused.status_code == 403 and "miner" in refused.json()["detail"]
    answered = http.get(path, headers=key(miner))
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"repo_id": "org/some-model", "revision": REVISION}
    # No pinned revision, and no Hugging Face to ask: the revision is null (absent).
    assert http.get(f"/chutes/{unpinned['chute_id']}/hf_info", headers=key(miner)).json() == {
        "repo_id": "org/some-model"
    }
    for chute_id in (plain["chute_id"], str(uuid.uuid4())):
        missing = http.get(f"/chutes/{chute_id}/hf_info", headers=key(miner))
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Chute not found or does not use a Hugging Face model"}


# ---- item 3: make_public ------------------------------------------------------------------------


def make_public(http: httpx.Client, user: User, chute_ids: list[str]) -> httpx.Response:
    return http.post("/chutes/make_public", json={"chutes": chute_ids}, headers=key(user))


def refusal(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    detail: str = response.json()["detail"]
    return detail


def test_make_public_copies_updates_and_prunes_once_a_day(http: httpx.Client, suite: RunningSuite) -> None:
    # Sources belong to a babelbit (netuid 59) admin; the publisher administers 59 and 78.
    source_owner = make_user(suite, "--role", "subnet_admin", "--netuid", "59", "--netuid", "78")
    publisher = make_user(suite, "--role", "subnet_admin_assign", "--netuid", "59", "--netuid", "78")
    tag = uuid.uuid4().hex[:6]
    a, b, c, d = (deployed(http, source_owner, f"babelbit-{x}-{tag}") for x in "abcd")
    vocence = deployed(http, source_owner, f"vocence-{tag}")
    outsider = deployed(http, source_owner, f"plain-{tag}")
    ids = [a["chute_id"], b["chute_id"]]

    assert refusal(make_public(http, publisher, []), 400) == "Must provide at least one chute ID"
    assert refusal(make_public(http, source_owner, ids), 403) == "Requires subnet_admin_assign role"
    no_subnet = make_user(suite, "--role", "subnet_admin_assign")
    assert refusal(make_public(http, no_subnet, ids), 403)
    assert refusal(make_public(http, publisher, ["nope"]), 400) == "Invalid chute UUID: nope"
    unknown = str(uuid.uuid4())
    assert refusal(make_public(http, publisher, [unknown]), 404) == f"Chute not found: {unknown}"
    assert "subnet" in refusal(make_public(http, publisher, [outsider["chute_id"]]), 403)
    assert "same subnet" in refusal(make_public(http, publisher, [a["chute_id"], vocence["chute_id"]]), 400)
    four = [x["chute_id"] for x in (a, b, c, d)]
    assert "At most 3" in refusal(make_public(http, publisher, four), 400)

    first = make_public(http, publisher, ids)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["deleted"] == []
    copy_a, copy_b = body["chutes"]
    for copy, source in ((copy_a, a), (copy_b, b)):
        assert copy["status"] == "created" and copy["source_chute_id"] == source["chute_id"]
        assert copy["chute_id"] == str(uuid.uuid5(uuid.NAMESPACE_OID, f"public::{source['chute_id']}"))
        assert copy["name"] == source["name"] and copy["version"] == source["version"]
        assert copy["slug"].startswith(publisher.username.lower()) and copy["created_at"]
    got = http.get(f"/chutes/{copy_a['chute_id']}").json()  # public: anyone sees it
    assert got["public"] is True and got["immutable"] is True
    assert got["tagline"] == f"PUBLIC_COPY:{a['chute_id']}" and got["user"]["user_id"] == publisher.user_id
    assert got.get("max_instances") is None  # public copies are platform-scaled
    listed = {x["chute_id"] for x in http.get("/bounties/").json()}
    assert {copy_a["chute_id"], copy_b["chute_id"]} <= listed  # a new public chute gets a bounty

    # Once a day per subnet, for every admin of it.
    assert "hours" in refusal(make_public(http, publisher, ids), 429)

    # A day later (the lock lifted), a changed source updates its copy; unlisted copies go.
    sql(suite, "UPDATE registry.make_public_locks SET until = now()")
    changed = deploy_body(a["name"], f"{source_owner.username}/base:1.0")
    changed["code"] += "\n# changed\n"
    redeployed = http.post(
        "/chutes/?accept_fee=true",
        json=changed,
        headers={**key(source_owner), "X-Chutes-Version": SDK_VERSION},
    )
    assert redeployed.status_code == 200, redeployed.text
    second = make_public(http, publisher, [a["chute_id"]]).json()
    [updated] = second["chutes"]
    assert updated["status"] == "updated" and updated["version"] == redeployed.json()["version"]
    [deleted] = second["deleted"]
    assert deleted["chute_id"] == copy_b["chute_id"] and deleted["status"] == "deleted"
    assert "source_chute_id" not in deleted
    assert http.get(f"/chutes/{copy_b['chute_id']}").status_code == 404

    sql(suite, "UPDATE registry.make_public_locks SET until = now()")
    [unchanged] = make_public(http, publisher, [a["chute_id"]]).json()["chutes"]
    assert unchanged["status"] == "unchanged" and unchanged["chute_id"] == copy_a["chute_id"]


# ---- item 4: easy vLLM and diffusion deploys ----------------------------------------------------


def register_template_images(suite: RunningSuite, template: str, *tags: str) -> None:
    """Public images of a template, registered by an operator account in this order."""
    operator = "img" + uuid.uuid4().hex[:10]
    admin(suite, "create-user", "--username", operator)
    for tag in tags:
        admin(suite, "add-image", "--username", operator, "--name", template, "--tag", tag, "--public",
              "--chutes-version", SDK_VERSION)  # fmt: skip


def test_easy_vllm_deploys_the_template_on_the_newest_image(http: httpx.Client, suite: RunningSuite) -> None:
    user = make_user(suite)
    miner = new_user(suite, "miner")
    model = f"org/model-{uuid.uuid4().hex[:6]}"
    body = {"model": model, "revision": REVISION, "public": False}

    assert http.post("/chutes/vllm", json=body).status_code == 401
    assert "No vllm image" in refusal(http.post("/chutes/vllm", json=body, headers=key(user)), 400)
    register_template_images(suite, "vllm", "0.9.0", "0.10.0rc1")

    invalid = http.post(
        "/chutes/vllm", json={"model": "no-slash", "revision": "xyz", "concurrency": 0}, headers=key(user)
    )
    assert invalid.status_code == 422
    assert {tuple(p["loc"]) for p in invalid.json()["detail"]} == {
        ("body", "model"), ("body", "revision"), ("body", "concurrency"),
    }  # fmt: skip
    unpinned = refusal(
        http.post("/chutes/vllm", json={"model": model, "public": False}, headers=key(user)), 400
    )
    assert "Hugging Face" in unpinned and "revision" in unpinned
    # Public by default, which needs the public_model_deployment role (the deploy path's rule).
    assert refusal(
        http.post("/chutes/vllm", json={"model": model, "revision": REVISION}, headers=key(user)), 400
    )

    made = http.post("/chutes/vllm", json=body | {"engine_args": {"max_model_len": 8192}}, headers=key(user))
    assert made.status_code == 200, made.text
    chute = made.json()
    assert chute["name"] == model and chute["standard_template"] == "vllm" and chute["revision"] == REVISION
    assert chute["image"]["name"] == "vllm" and chute["image"]["tag"] == "0.9.0"  # rc tags are skipped
    assert chute["node_selector"]["gpu_count"] == 1 and chute["node_selector"]["min_vram_gb_per_gpu"] == 80
    assert chute["concurrency"] == 8 and chute["lock_modules"] is True
    paths = {c["public_api_path"] for c in chute["cords"]}
    assert {"/v1/chat/completions", "/v1/completions"} <= paths

    # Listed with the template's cords, and its code names the model for miners.
    listed = http.get("/chutes/?template=vllm", headers=key(user)).json()
    [item] = [i for i in listed["items"] if i["chute_id"] == chute["chute_id"]]
    assert {c["public_api_path"] for c in listed["cord_refs"][item["cord_ref_id"]]} == paths
    code = http.get(f"/chutes/code/{chute['chute_id']}", headers=key(user)).text
    assert "build_vllm_chute(" in code and "--max-model-len 8192" in code
    info = http.get(f"/chutes/{chute['chute_id']}/hf_info", headers=key(miner)).json()
    assert info == {"repo_id": model, "revision": REVISION}


def test_easy_diffusion_deploys_the_template(http: httpx.Client, suite: RunningSuite) -> None:
    user = make_user(suite)
    register_template_images(suite, "diffusion", "0.1.0")
    invalid = http.post("/chutes/diffusion", json={"model": "not a model"}, headers=key(user))
    assert invalid.status_code == 422
    assert {tuple(p["loc"]) for p in invalid.json()["detail"]} == {("body", "model"), ("body", "name")}
    bad_selector = http.post(
        "/chutes/diffusion",
        json={"model": "org/sdxl", "name": "x-sdxl", "node_selector": {"gpu_count": 99}},
        headers=key(user),
    )
    assert bad_selector.status_code == 422 and bad_selector.json()["detail"][0]["loc"][:2] == [
        "body",
        "node_selector",
    ]

    # Any name the pattern allows (quotes included) is a clear answer, never a 5xx.
    quoted = http.post(
        "/chutes/diffusion", json={"model": "org/sdxl", "name": 'x"""y', "public": False}, headers=key(user)
    )
    assert quoted.status_code == 400 and "detail" in quoted.json()
    name = f"sdxl-{uuid.uuid4().hex[:6]}"
    made = http.post(
        "/chutes/diffusion",
        json={"model": "https://civitai.com/models/12345/some-model", "name": name, "public": False},
        headers=key(user),
    )
    assert made.status_code == 200, made.text
    chute = made.json()
    assert chute["name"] == name and chute["standard_template"] == "diffusion"
    assert chute["node_selector"]["min_vram_gb_per_gpu"] == 24 and chute["concurrency"] == 1
    assert [c["public_api_path"] for c in chute["cords"]] == ["/generate"]
