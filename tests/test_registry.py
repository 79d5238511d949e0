"""Chutes and images through the real suite: deploy, read, list, update, delete, share.

Deploy bodies are the ones the published CLI sends (official-client-wire.md 3.1), statuses and
details the ones spec/chutes-api.md 4 gives.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import RunningSuite
from tests.test_identity import Hotkey, User, admin, new_user

SDK_VERSION = "0.6.9"
CODE = (
    "from chutes.chute import Chute, NodeSelector\n\n"
    'chute = Chute(username="x", name="cli-echo", image="x")\n'
)


def deploy_body(name: str, image: str, /, **changes: Any) -> dict[str, Any]:
    """The body `chutes deploy` 0.6.9 sends, key for key (wire 3.1)."""
    body: dict[str, Any] = {
        "name": name, "tagline": "echo", "readme": "Echoes its input.", "logo_id": None, "image": image,
        "public": False, "standard_template": None,
        "node_selector": {"gpu_count": 1, "min_vram_gb_per_gpu": 16, "max_hourly_price_per_gpu": None,
                          "include": None, "exclude": None},
        "filename": "cli_echo.py", "ref_str": "cli_echo:chute", "code": CODE, "concurrency": 1,
        "max_instances": 1, "scaling_threshold": 0.75, "shutdown_after_seconds": 300,
        "allow_external_egress": False, "encrypted_fs": False, "tee": False, "lock_modules": None,
        "revision": None,
        "cords": [{"method": "POST", "path": "/echo", "public_api_path": "/echo", "public_api_method": "POST",
                   "stream": False, "function": "echo",
                   "input_schema": {"type": "object", "properties": {"text": {"type": "string"}},
                                    "required": ["text"], "definitions": {}},
                   "output_schema": {"type": "string"}, "output_content_type": "text/plain",
                   "minimal_input_schema": None, "passthrough": False}],
        "jobs": [],
    }  # fmt: skip
    body.update(changes)
    return body


@pytest.fixture(scope="module")
def http(suite: RunningSuite) -> httpx.Client:
    with httpx.Client(base_url=suite.gateway, timeout=30) as client:
        yield client  # type: ignore[misc]


@pytest.fixture(scope="module")
def owner(suite: RunningSuite) -> User:
    hotkey = Hotkey.new()
    username = "own" + uuid.uuid4().hex[:8]
    made = admin(suite, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100")
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


@pytest.fixture(scope="module")
def friend(suite: RunningSuite) -> User:
    return new_user(suite)


@pytest.fixture(scope="module")
def image(suite: RunningSuite, owner: User) -> str:
    admin(
        suite,
        "add-image",
        "--username",
        owner.username,
        "--name",
        "cli-base",
        "--tag",
        "1.0",
        "--chutes-version",
        SDK_VERSION,
    )
    return f"{owner.username}/cli-base:1.0"


def key(user: User) -> dict[str, str]:
    return {"Authorization": f"Basic {user.api_key}"}


def deploy(http: httpx.Client, user: User, body: dict[str, Any], accept_fee: bool = True) -> httpx.Response:
    fee = "true" if accept_fee else "false"
    return http.post(
        f"/chutes/?accept_fee={fee}", json=body, headers={**key(user), "X-Chutes-Version": SDK_VERSION}
    )


def deployed(http: httpx.Client, user: User, body: dict[str, Any]) -> dict[str, Any]:
    response = deploy(http, user, body)
    assert response.status_code == 200, response.text
    chute: dict[str, Any] = response.json()
    return chute


def detail(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    return response.json()["detail"]


def uuid5(text: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


# ---- images ----------------------------------------------------------------------------------


def test_images_resolve_by_reference_and_by_sdk_uid(
    http: httpx.Client, owner: User, friend: User, image: str
) -> None:
    by_name = http.get(f"/images/{image}", headers=key(owner))
    assert by_name.status_code == 200, by_name.text
    body = by_name.json()
    assert body["status"] == "built and pushed" and body["patch_version"] == "initial"
    assert body["chutes_version"] == SDK_VERSION and body["user"]["username"] == owner.username
    # An `Image` object deploys by its uid: uuid5 of "username/name:tag", lower-cased.
    assert body["image_id"] == uuid5(image.lower())
    assert http.get(f"/images/{body['image_id']}", headers=key(owner)).json()["name"] == "cli-base"
    assert (
        http.get("/images/cli-base:1.0", headers=key(owner)).status_code == 200
    )  # username defaults to caller
    assert (
        detail(http.get(f"/images/{image}", headers=key(friend)), 404)
        == "Image not found, or does not belong to you"
    )
    listed = http.get("/images/?include_public=True", headers=key(owner)).json()
    assert body["image_id"] in {i["image_id"] for i in listed["items"]} and listed["total"] >= 1


# ---- deploy --------------------------------------------------------------------------------


def test_deploy_fee_balance_ids_and_redeploy(http: httpx.Client, owner: User, image: str) -> None:
    name = "cli-echo-" + uuid.uuid4().hex[:6]
    body = deploy_body(name, image)
    notice = detail(deploy(http, owner, body, accept_fee=False), 402)
    assert notice.startswith("DEPLOYMENT FEE NOTICE") and "--accept-fee" in notice

    chute = deployed(http, owner, body)
    image_id = uuid5(image.lower())
    assert chute["chute_id"] == uuid5(f"{owner.username}::chute::{name}")
    assert chute["version"] == uuid5(f"{image_id}:initial:{CODE}")
    assert chute["slug"] == f"{owner.username}-{name}"
    assert chute["image"]["image_id"] == image_id and chute["user"]["username"] == owner.username
    assert chute["cords"][0]["path"] == "/echo" and chute["cords"][0]["input_schema"]["required"] == ["text"]
    assert chute["node_selector"]["gpu_count"] == 1 and "b200" in chute["node_selector"]["exclude"]
    assert chute["supported_gpus"] and chute["hot"] is False and chute["instances"] == []
    assert chute["max_instances"] == 1 and chute["chutes_version"] == SDK_VERSION

    again = deploy(http, owner, body)
    assert detail(again, 409) == (
        f"Chute with name={name}, version={chute['version']} and public=False already exists"
    )
    changed = deployed(http, owner, {**body, "code": CODE + "# v2\n", "tagline": "second"})
    assert (changed["chute_id"], changed["slug"], changed["created_at"]) == (
        chute["chute_id"],
        chute["slug"],
        chute["created_at"],
    )
    assert changed["version"] != chute["version"] and changed["tagline"] == "second"


@pytest.mark.parametrize(
    ("change", "status", "expected"),
    [
        ({"cords": []}, 400, "at least one cord or one job"),
        (
            {"jobs": [{"name": "train", "upload": True, "ports": [], "timeout": None}]},
            400,
            "jobs or cords not both",
        ),
        ({"node_selector": {"gpu_count": 1, "include": ["3090", "4090"]}}, 403, "consumer GPUs exclusively"),
        ({"node_selector": {"gpu_count": 1, "include": ["a4000", "h200"]}}, 400, "differ too much in price"),
        (
            {"node_selector": {"gpu_count": 1, "exclude": ["a4000", "a5000", "l4", "a10", "3090", "4090"]}},
            400,
            "Cannot exclude more than 5",
        ),
        ({"public": True}, 400, "deploy privately and share"),
        ({"image": "nobody/nothing:0.1"}, 400, "Chute image not found"),
        ({"standard_template": "vllm"}, 400, "must pin a revision"),
        ({"name": "my-TEE-model"}, 400, "reserved for tee=true"),
        ({"tee": True}, 400, "TEE private deployments"),
        ({"code": "def broken(:\n"}, 400, "does not parse as Python"),
    ],
)
def test_deploy_rules(
    http: httpx.Client, owner: User, image: str, change: dict[str, Any], status: int, expected: str
) -> None:
    body = deploy_body("rules-" + uuid.uuid4().hex[:6], image, **change)
    assert expected in detail(deploy(http, owner, body), status)


def test_deploy_request_validation_is_fastapi_422(http: httpx.Client, owner: User, image: str) -> None:
    body = deploy_body("ab", image, filename="Bad Name.py", concurrency=500)
    del body["code"]
    problems = detail(deploy(http, owner, body), 422)
    locs = {tuple(p["loc"]): p["type"] for p in problems}
    assert locs[("body", "code")] == "missing"
    assert locs[("body", "name")] == "string_too_short"
    assert locs[("body", "filename")] == "string_pattern_mismatch"
    assert locs[("body", "concurrency")] == "less_than_equal"
    bad_gpu = detail(
        deploy(http, owner, deploy_body("gpu-typo", image, node_selector={"include": ["h1000"]})), 422
    )
    assert bad_gpu[0]["loc"][:2] == ["body", "node_selector"] and "h1000" in bad_gpu[0]["msg"]


def test_old_sdk_images_are_refused(http: httpx.Client, suite: RunningSuite, owner: User) -> None:
    admin(
        suite,
        "add-image",
        "--username",
        owner.username,
        "--name",
        "ancient",
        "--tag",
        "0.1",
        "--chutes-version",
        "0.3.1",
    )
    body = deploy_body("old-sdk", f"{owner.username}/ancient:0.1")
    assert "too old" in detail(deploy(http, owner, body), 400)


def test_anonymous_deploy_is_401(http: httpx.Client, image: str) -> None:
    assert http.post("/chutes/?accept_fee=true", json=deploy_body("anon", image)).status_code == 401


# ---- reading, sharing, visibility ----------------------------------------------------------


def test_get_code_share_and_hidden_chutes(http: httpx.Client, owner: User, friend: User, image: str) -> None:
    name = f"{owner.username}/shared-echo"  # names may contain "/"
    chute = deployed(http, owner, deploy_body(name, image))
    chute_id = chute["chute_id"]

    got = http.get(f"/chutes/{name}", headers=key(owner))
    assert got.status_code == 200, got.text
    shown = got.json()
    assert shown["chute_id"] == chute_id and shown["cords"][0]["function"] == "echo"
    assert shown["effective_compute_multiplier"] == pytest.approx(
        2 * shown["node_selector"]["compute_multiplier"]
    )
    assert shown["compute_multiplier_factors"]["private"] == 2
    assert shown["current_estimated_price"]["usd"]["hour"] > 0
    assert "hourly_price_range" in shown["current_estimated_price"]
    code = http.get(f"/chutes/code/{chute_id}", headers=key(owner))
    assert code.headers["content-type"] == "text/plain" and code.text == CODE

    hidden = "Chute not found, or does not belong to you"
    for headers in ({}, key(friend)):
        assert detail(http.get(f"/chutes/{chute_id}", headers=headers), 404) == hidden
        assert detail(http.get(f"/chutes/code/{chute_id}", headers=headers), 404) == hidden

    share = {"chute_id_or_name": name, "user_id_or_name": friend.username.upper()}
    shared = http.post("/chutes/share", json=share, headers=key(owner))
    assert shared.json() == {
        "status": f"Successfully shared chute.name='{name}' with user.username='{friend.username}'"
    }
    assert http.post("/chutes/share", json=share, headers=key(owner)).status_code == 200  # idempotent
    assert http.get(f"/chutes/{chute_id}", headers=key(friend)).status_code == 200
    assert http.get(f"/chutes/code/{chute_id}", headers=key(friend)).text == CODE
    # Shared chutes are readable but not listed, and not the friend's to share on.
    assert chute_id not in {
        c["chute_id"] for c in http.get("/chutes/?include_public=True", headers=key(friend)).json()["items"]
    }
    assert "does not belong to you" in detail(
        http.post(
            "/chutes/share",
            json={"chute_id_or_name": chute_id, "user_id_or_name": owner.username},
            headers=key(friend),
        ),
        404,
    )

    unshared = http.post("/chutes/unshare", json=share, headers=key(owner))
    assert unshared.json()["status"].endswith("(if share exists)")
    assert detail(http.get(f"/chutes/{chute_id}", headers=key(friend)), 404) == hidden

    to_self = {"chute_id_or_name": chute_id, "user_id_or_name": owner.user_id}
    assert detail(http.post("/chutes/share", json=to_self, headers=key(owner)), 400) == (
        "Cannot share a chute with yourself"
    )
    nobody = {"chute_id_or_name": chute_id, "user_id_or_name": "no-such-user-here"}
    assert detail(http.post("/chutes/share", json=nobody, headers=key(owner)), 404) == (
        "Could not find target user to share with"
    )


def test_authorization_matrix_on_an_optional_auth_route(
    http: httpx.Client, suite: RunningSuite, owner: User, friend: User, image: str
) -> None:
    chute = deployed(http, owner, deploy_body("matrix-" + uuid.uuid4().hex[:6], image))
    path = f"/chutes/{chute['chute_id']}"
    scoped_here = http.post(
        "/api_keys/",
        headers=key(owner),
        json={
            "name": "read-one",
            "admin": False,
            "scopes": [{"object_type": "chutes", "object_id": chute["chute_id"], "action": "read"}],
        },
    ).json()
    scoped_elsewhere = http.post(
        "/api_keys/",
        headers=key(owner),
        json={
            "name": "read-other",
            "admin": False,
            "scopes": [{"object_type": "chutes", "object_id": str(uuid.uuid4()), "action": "read"}],
        },
    ).json()
    cases = {
        "owner, admin key": (key(owner), 200),
        "owner, hotkey": (owner.hotkey.headers("chutes"), 200),
        "owner, scoped key for this chute": ({"Authorization": scoped_here["secret_key"]}, 200),
        "owner, scoped key for another chute (treated as anonymous)": (
            {"Authorization": scoped_elsewhere["secret_key"]},
            404,
        ),
        "other user": (key(friend), 404),
        "anonymous": ({}, 404),
        "forged identity header": ({"x-chutes-user-id": owner.user_id}, 404),
        "malformed key": ({"Authorization": "Bearer nonsense"}, 401),
    }
    for case, (headers, status) in cases.items():
        assert http.get(path, headers=headers).status_code == status, case


def test_list_visibility_filters_and_client_keys(
    http: httpx.Client, owner: User, friend: User, image: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"list-{tag}-a", f"list-{tag}-b", f"list-{tag}-skip"]
    for name in names:
        deployed(http, owner, deploy_body(name, image))

    mine = http.get(
        f"/chutes/?name=list-{tag}&limit=25&page=0&include_public=False", headers=key(owner)
    ).json()
    assert mine["total"] == 3 and {i["name"] for i in mine["items"]} == set(names)
    for item in mine["items"]:  # every key the published CLI indexes
        assert {"chute_id", "name", "hot", "slug", "created_at", "cord_ref_id"} <= set(item)
        assert item["cords"] == []
    ref = mine["items"][0]["cord_ref_id"]
    assert [c["function"] for c in mine["cord_refs"][ref]] == ["echo"]
    assert "input_schema" not in mine["cord_refs"][ref][0]
    with_schemas = http.get(f"/chutes/?name=list-{tag}&include_schemas=true", headers=key(owner)).json()
    assert "input_schema" in with_schemas["cord_refs"][ref][0]
    assert len({i["cord_ref_id"] for i in mine["items"]}) == 1  # identical cords share one ref

    filtered = http.get(
        f"/chutes/?name=list-{tag}&exclude=skip&image=cli-base:1.0&template=other", headers=key(owner)
    ).json()
    assert {i["name"] for i in filtered["items"]} == set(names[:2])
    one = http.get(f"/chutes/?slug={owner.username}-list-{tag}-a", headers=key(owner)).json()
    assert [i["name"] for i in one["items"]] == [names[0]]
    paged = http.get(f"/chutes/?name=list-{tag}&limit=2&page=1", headers=key(owner)).json()
    assert (paged["total"], len(paged["items"]), paged["page"], paged["limit"]) == (3, 1, 1, 2)

    assert http.get(f"/chutes/?name=list-{tag}", headers=key(friend)).json()["total"] == 0
    assert http.get(f"/chutes/?name=list-{tag}&include_public=True").json()["total"] == 0
    assert detail(http.get("/chutes/?page=1&offset=5", headers=key(owner)), 400) == (
        "Cannot specify both page and offset, select <= 1 of these."
    )
    assert detail(http.get("/chutes/?limit=0", headers=key(owner)), 422)[0]["loc"] == ["query", "limit"]


# ---- update and delete ---------------------------------------------------------------------


def test_update_and_delete(
    http: httpx.Client, owner: User, friend: User, image: str, database_url: str
) -> None:
    name = "edit-" + uuid.uuid4().hex[:6]
    chute = deployed(http, owner, deploy_body(name, image))
    chute_id = chute["chute_id"]
    edits = {"tagline": "better", "readme": " ", "max_instances": 3, "shutdown_after_seconds": 600}
    assert http.get(f"/chutes/{chute_id}", headers=key(owner)).json()["tagline"] == "echo"  # now cached
    updated = http.put(f"/chutes/{name}", json=edits, headers=key(owner))
    assert updated.status_code == 200, updated.text
    assert updated.json()["tagline"] == "better" and updated.json()["readme"] == "Echoes its input."
    assert (updated.json()["max_instances"], updated.json()["shutdown_after_seconds"]) == (3, 600)
    assert http.get(f"/chutes/{chute_id}", headers=key(owner)).json()["tagline"] == "better"  # not stale
    assert detail(http.put(f"/chutes/{chute_id}", json=edits, headers=key(friend)), 404).startswith(
        "Chute not found"
    )
    assert detail(http.put(f"/chutes/{chute_id}", json={"max_instances": 0}, headers=key(owner)), 422)[0][
        "loc"
    ] == ["body", "max_instances"]

    assert detail(http.delete(f"/chutes/{name}", headers=key(owner)), 400) == "Must use chute UUID to delete."
    assert http.delete(f"/chutes/{chute_id}", headers=key(friend)).status_code == 404
    assert http.delete(f"/chutes/{chute_id}", headers=key(owner)).json() == {
        "chute_id": chute_id,
        "deleted": True,
    }
    assert http.get(f"/chutes/{chute_id}", headers=key(owner)).status_code == 404

    async def record() -> tuple[list[str], int]:
        connection = await asyncpg.connect(database_url)
        try:
            kinds = await connection.fetch(
                "SELECT kind, payload FROM registry.outbox WHERE payload->>'chute_id' = $1 ORDER BY event_id",
                chute_id,
            )
            ended = await connection.fetchval(
                "SELECT count(*) FROM registry.chute_history WHERE chute_id = $1 AND deleted_at IS NOT NULL",
                chute_id,
            )
            for event in kinds:  # every event names the chute and its version
                assert json.loads(event["payload"])["version"] == chute["version"]
            return [k["kind"] for k in kinds], ended
        finally:
            await connection.close()

    kinds, ended = asyncio.run(record())
    assert kinds == ["chute_created", "chute_updated", "chute_deleted"]
    assert ended >= 2  # the creation and the edit, both closed by the deletion


def test_twenty_four_deploys_a_day(http: httpx.Client, suite: RunningSuite) -> None:
    username = "busy" + uuid.uuid4().hex[:8]
    made = admin(suite, "create-user", "--username", username, "--balance", "1000")
    user = User(str(made["user_id"]), username, str(made["api_key"]), Hotkey.new())
    admin(
        suite,
        "add-image",
        "--username",
        user.username,
        "--name",
        "base",
        "--tag",
        "1",
        "--chutes-version",
        SDK_VERSION,
    )
    image = f"{user.username}/base:1"
    for n in range(24):
        deployed(http, user, deploy_body(f"daily-{n}", image))
    refused = detail(deploy(http, user, deploy_body("daily-24", image)), 429)
    assert "24 updates/creations" in refused


def test_redeploy_of_a_chute_with_instances_records_a_rolling_update(
    http: httpx.Client, owner: User, image: str, database_url: str
) -> None:
    name = "rolling-" + uuid.uuid4().hex[:6]
    first = deployed(http, owner, deploy_body(name, image))

    async def sql(query: str, *args: Any) -> Any:
        connection = await asyncpg.connect(database_url)
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()

    # Instances come from miners (outside this suite): add two, as a miner's launch would.
    for instance in ("i-1", "i-2"):
        asyncio.run(
            sql(
                "INSERT INTO registry.instances"
                " (instance_id, chute_id, version, miner_hotkey, active, verified)"
                " VALUES ($1, $2, $3, '5Miner', true, true)",
                instance,
                first["chute_id"],
                first["version"],
            )
        )
    hot = http.get(f"/chutes/{first['chute_id']}", headers=key(owner)).json()
    assert hot["hot"] is True and [i["instance_id"] for i in hot["instances"]] == ["i-1", "i-2"]

    second = deployed(http, owner, deploy_body(name, image, code=CODE + "# v2\n"))
    [update] = asyncio.run(
        sql("SELECT * FROM registry.rolling_updates WHERE chute_id = $1", first["chute_id"])
    )
    assert (update["old_version"], update["new_version"]) == (first["version"], second["version"])
    assert json.loads(update["permitted"]) == {"5Miner": 2}
    listed = http.get("/chutes/rolling_updates").json()
    assert {
        "chute_id": first["chute_id"],
        "old_version": first["version"],
        "new_version": second["version"],
    }.items() <= next(u for u in listed if u["chute_id"] == first["chute_id"]).items()


def test_disabling_a_private_chute_removes_its_instances(
    http: httpx.Client, owner: User, image: str, database_url: str
) -> None:
    chute = deployed(http, owner, deploy_body("disable-" + uuid.uuid4().hex[:6], image))

    async def add_instance() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "INSERT INTO registry.instances (instance_id, chute_id, active, verified)"
                " VALUES ($1, $2, true, true)",
                "i-" + uuid.uuid4().hex[:6],
                chute["chute_id"],
            )
        finally:
            await connection.close()

    asyncio.run(add_instance())
    disabled = http.put(f"/chutes/{chute['chute_id']}", json={"disabled": True}, headers=key(owner)).json()
    assert disabled["disabled"] is True and disabled["instances"] == [] and disabled["hot"] is False


def test_images_in_use_cannot_be_deleted(
    http: httpx.Client, suite: RunningSuite, owner: User, friend: User
) -> None:
    admin(
        suite,
        "add-image",
        "--username",
        owner.username,
        "--name",
        "temp",
        "--tag",
        "1",
        "--chutes-version",
        SDK_VERSION,
    )
    image_id = uuid5(f"{owner.username}/temp:1".lower())
    chute = deployed(http, owner, deploy_body("uses-temp", f"{owner.username}/temp:1"))
    assert "delete them first" in detail(http.delete(f"/images/{image_id}", headers=key(owner)), 409)
    assert http.delete(f"/images/{image_id}", headers=key(friend)).status_code == 404
    http.delete(f"/chutes/{chute['chute_id']}", headers=key(owner))
    assert http.delete(f"/images/{image_id}", headers=key(owner)).json() == {
        "image_id": image_id,
        "deleted": True,
    }
    assert http.get(f"/images/{image_id}", headers=key(owner)).status_code == 404


def test_identical_vllm_chutes_share_a_cord_ref() -> None:
    from services.registry.views import cord_ref_id

    def cords(model: str) -> list[dict[str, Any]]:
        return [{"path": "/v1/chat", "input_schema": {"properties": {"model": {"default": model}}}}]

    assert cord_ref_id(cords("org/a"), "org/a", "vllm") == cord_ref_id(cords("org/b"), "org/b", "vllm")
    assert cord_ref_id(cords("org/a"), "org/a", None) != cord_ref_id(cords("org/b"), "org/b", None)


def test_integrated_subnet_chutes(
    http: httpx.Client, suite: RunningSuite, owner: User, friend: User, image: str
) -> None:
    refused = detail(deploy(http, owner, deploy_body("my-babelbit-model", image)), 403)
    assert "subnet=babelbit netuid=59" in refused

    username = "affadmin" + uuid.uuid4().hex[:6]
    made = admin(
        suite,
        "create-user",
        "--username",
        username,
        "--role",
        "subnet_admin",
        "--netuid",
        "120",
        "--balance",
        "100",
    )
    affine_admin = User(str(made["user_id"]), username, str(made["api_key"]), Hotkey.new())
    admin(
        suite,
        "add-image",
        "--username",
        username,
        "--name",
        "base",
        "--tag",
        "1",
        "--chutes-version",
        SDK_VERSION,
    )
    chute = deployed(
        http, affine_admin, deploy_body("miner-affine-" + uuid.uuid4().hex[:4], f"{username}/base:1")
    )
    # Affine chutes are readable (and listed) for everybody, private or not.
    shown = http.get(f"/chutes/{chute['chute_id']}")
    assert shown.status_code == 200 and shown.json()["compute_multiplier_factors"]["integrated_subnet"] == 3
    assert chute["chute_id"] in {
        c["chute_id"] for c in http.get(f"/chutes/?name={chute['name']}").json()["items"]
    }
    # Only the owner or an admin of the chute's subnet may delete it.
    assert http.delete(f"/chutes/{chute['chute_id']}", headers=key(friend)).status_code == 404
    other_admin = admin(
        suite,
        "create-user",
        "--username",
        "aff2" + uuid.uuid4().hex[:6],
        "--role",
        "subnet_admin",
        "--netuid",
        "120",
    )
    gone = http.delete(f"/chutes/{chute['chute_id']}", headers={"Authorization": str(other_admin["api_key"])})
    assert gone.json() == {"chute_id": chute["chute_id"], "deleted": True}


def test_gpu_count_history_keeps_deleted_chutes(http: httpx.Client, owner: User, image: str) -> None:
    name = "gpus-" + uuid.uuid4().hex[:6]
    first = deployed(http, owner, deploy_body(name, image))
    body = deploy_body(name, image, code=CODE + "# two GPUs\n")
    body["node_selector"]["gpu_count"] = 2
    second = deployed(http, owner, body)
    assert second["chute_id"] == first["chute_id"]
    assert http.delete(f"/chutes/{first['chute_id']}", headers=key(owner)).status_code == 200
    history = http.get("/chutes/gpu_count_history")
    assert history.status_code == 200 and isinstance(history.json(), list)
    mine = [row for row in history.json() if row["chute_id"] == first["chute_id"]]
    assert mine == [{"chute_id": first["chute_id"], "gpu_count": 2}]
