"""PUT /chutes/{chute_id}/teeify (spec chutes-api.md 4.21): the rewrite and sizing as pure
functions, then the route through the gateway of the real suite: the copy's code, node selector,
ids and owner, and the checks in the real order."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.kit.errors import InvalidArgument
from services.registry.deploy.teeify import next_power_of_2, rewrite_for_tee, tee_gpu_count
from tests.conftest import RunningSuite
from tests.test_identity import Hotkey, User, admin, new_user
from tests.test_registry import SDK_VERSION, deploy_body, deployed, detail, key, uuid5

REVISION = "0123456789abcdef0123456789abcdef01234567"
#: An affine miner's chute as the vLLM template writes it.
VLLM_CODE = f"""import os
from chutes.chute import NodeSelector
from chutes.chute.template.vllm import build_vllm_chute

# The model a miner trained.
chute = build_vllm_chute(
    username="miner1",
    model_name="miner1/Affine-qwen-7b",
    revision="{REVISION}",
    node_selector=NodeSelector(gpu_count=4, include=["a100"]),
    concurrency=20,
    engine_args="--max-model-len 32768",
    max_instances=4,
    tee=False,
)
"""


def vllm_tee_code(name: str, gpu_count: int) -> str:
    """The spec's rewrite of VLLM_CODE: ast.unparse's form (comments gone, single quotes), the
    selector and tee replaced in place, name appended, then the trailing rename."""
    return (
        "import os\n"
        "from chutes.chute import NodeSelector\n"
        "from chutes.chute.template.vllm import build_vllm_chute\n"
        "chute = build_vllm_chute(username='miner1', model_name='miner1/Affine-qwen-7b', "
        f"revision='{REVISION}', node_selector=NodeSelector(gpu_count={gpu_count}, include=['h200']), "
        "concurrency=20, engine_args='--max-model-len 32768', max_instances=4, tee=True, "
        f"name='{name}')\n"
        f"chute.chute._name = '{name}'\n"
    )


# ---- the rewrite ------------------------------------------------------------------------------


def test_a_vllm_template_chute_is_rewritten_as_the_spec_says() -> None:
    assert rewrite_for_tee(VLLM_CODE, 4, "miner1/Affine-qwen-7b-TEE") == vllm_tee_code(
        "miner1/Affine-qwen-7b-TEE", 4
    )


def test_a_plain_chute_gets_the_missing_keywords_appended() -> None:
    code = (
        "from chutes.chute import Chute, NodeSelector\n"
        'chute = Chute(username="x", name="my-affine", image="x/base:1", concurrency=2)\n'
        "@chute.cord(public_api_path='/echo')\n"
        "async def echo(self, text: str) -> str:\n"
        "    return text\n"
    )
    assert rewrite_for_tee(code, 2, "my-affine-TEE") == (
        "from chutes.chute import Chute, NodeSelector\n"
        "chute = Chute(username='x', name='my-affine-TEE', image='x/base:1', concurrency=2, "
        "node_selector=NodeSelector(gpu_count=2, include=['h200']), tee=True)\n\n"
        "@chute.cord(public_api_path='/echo')\n"
        "async def echo(self, text: str) -> str:\n"
        "    return text\n"
        "chute.chute._name = 'my-affine-TEE'\n"
    )


@pytest.mark.parametrize("kind", ["vllm", "plain"])
def test_the_rewritten_code_loads_with_the_sdk(
    kind: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chutes.runner import load_chute

    plain = (
        "from chutes.chute import Chute, NodeSelector\n"
        'chute = Chute(username="x", name="my-affine", image="x/base:1", concurrency=2)\n'
    )
    source, name = (VLLM_CODE, "miner1/Affine-qwen-7b-TEE") if kind == "vllm" else (plain, "my-affine-TEE")
    path = tmp_path / f"tee_{kind}.py"
    path.write_text(rewrite_for_tee(source, 4, name))
    monkeypatch.setenv("CHUTES_EXECUTION_CONTEXT", "REMOTE")
    loaded = load_chute(f"{path}:chute").chute
    assert (loaded.name, loaded.tee) == (name, True)
    assert loaded.node_selector.gpu_count == 4 and loaded.node_selector.include == ["h200"]


def test_every_builder_call_is_rewritten_bare_or_as_an_attribute() -> None:
    code = (
        "import chutes.chute\n"
        "from chutes.chute.template.sglang import build_sglang_chute\n"
        "a = build_sglang_chute(username='u', model_name='m/affine', node_selector=None, tee=True)\n"
        "b = chutes.chute.Chute(username='u', name='old', image='i', **extra)\n"
        "c = NodeSelector(gpu_count=1)\n"
    )
    rewritten = rewrite_for_tee(code, 8, 'm/affine-"TEE')
    selector = "node_selector=NodeSelector(gpu_count=8, include=['h200'])"
    assert (
        f"a = build_sglang_chute(username='u', model_name='m/affine', {selector}, tee=True, "
        "name='m/affine-\"TEE')" in rewritten
    )
    # After a ** splat a keyword is still valid Python; the splat itself is left alone.
    assert (
        f"b = chutes.chute.Chute(username='u', name='m/affine-\"TEE', image='i', **extra, {selector}, "
        "tee=True)" in rewritten
    )
    assert "c = NodeSelector(gpu_count=1)" in rewritten  # not a builder
    assert rewritten.endswith("chute.chute._name = 'm/affine-\"TEE'\n")
    compile(rewritten, "chute.py", "exec")


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("chute = Chute(username='u', name='x'\n", "it does not parse"),
        (
            "chute = make_chute(username='u')\n",
            "it has no call to build_sglang_chute, build_vllm_chute, Chute",
        ),
        ("chute = Chute('u', 'name', 'image')\n", "line 1 passes Chute's name positionally"),
        ("chute = build_vllm_chute('u', 'm', NodeSelector())\n", "passes build_vllm_chute's node_selector"),
        ("chute = Chute(*args)\n", "line 1 calls Chute with *args"),
    ],
)
def test_code_that_cannot_be_rewritten_is_a_clear_400(code: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        rewrite_for_tee(code, 1, "x-TEE")
    assert raised.value.http_status == 400
    assert str(raised.value).startswith("Cannot rewrite the chute's code for TEE: ")
    assert problem in str(raised.value)


# ---- sizing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "power"), [(-1, 1), (0, 1), (1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (9, 16)])
def test_next_power_of_2(n: int, power: int) -> None:
    assert next_power_of_2(n) == power


@pytest.mark.parametrize(
    ("selector", "h200s"),
    [
        ({"gpu_count": 1, "include": ["a100"]}, 1),  # 80 GB in one h200
        ({"gpu_count": 2, "include": ["h100"]}, 2),  # 160 GB: 2
        ({"gpu_count": 4, "include": ["a100"]}, 4),  # 320 GB: 3, rounded to 4
        ({"gpu_count": 8, "include": ["a100"]}, 8),  # 640 GB: 5, rounded to 8
        ({"gpu_count": 8, "include": ["b200"]}, 8),  # 1536 GB: 11, capped at 8
        ({"gpu_count": 1, "include": ["a100", "h100", "h200"]}, 1),  # the smallest counts
        ({"gpu_count": 2, "min_vram_gb_per_gpu": 80}, 2),  # smallest supported: 80 GB
        ({"gpu_count": 8, "min_vram_gb_per_gpu": 16}, 1),  # 8 x 16 GB fit one h200
        # Nothing matches (consumer GPUs with 48 GB): 80 GB each is assumed, 240 GB: 2.
        ({"gpu_count": 3, "include": ["3090"], "min_vram_gb_per_gpu": 48}, 2),
        # A stored selector with the computed keys the API adds still reads.
        ({"gpu_count": 3, "include": ["a6000"], "supported_gpus": ["a6000"], "compute_multiplier": 1}, 2),
    ],
)
def test_h200_sizing(selector: dict[str, Any], h200s: int) -> None:
    assert tee_gpu_count(selector) == h200s


# ---- through the gateway ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(suite: RunningSuite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=suite.gateway, timeout=30) as client:
        yield client


def subnet_admin(suite: RunningSuite, netuid: int, *, image: bool = False) -> User:
    username = f"sn{netuid}a" + uuid.uuid4().hex[:8]
    hotkey = Hotkey.new()
    made = admin(
        suite,
        "create-user",
        "--username",
        username,
        "--hotkey",
        hotkey.ss58,
        "--role",
        "subnet_admin",
        "--netuid",
        str(netuid),
        "--balance",
        "100",
    )
    if image:
        admin(
            suite,
            "add-image",
            "--username",
            username,
            "--name",
            "vllm",
            "--tag",
            "1",
            "--chutes-version",
            SDK_VERSION,
        )
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


def teeify(http: httpx.Client, user: User | None, chute_id: str) -> httpx.Response:
    return http.put(f"/chutes/{chute_id}/teeify", headers=key(user) if user else {})


@pytest.fixture(scope="module")
def miner(suite: RunningSuite) -> User:
    """An affine subnet admin owning an affine vLLM chute."""
    return subnet_admin(suite, 120, image=True)


@pytest.fixture(scope="module")
def affine_chute(http: httpx.Client, miner: User) -> dict[str, Any]:
    body = deploy_body(
        f"{miner.username}/Affine-qwen-" + uuid.uuid4().hex[:6],
        f"{miner.username}/vllm:1",
        code=VLLM_CODE,
        filename="affine.py",
        ref_str="affine:chute",
        tagline="a trained model",
        readme="# Affine",
        tool_description="answers",
        concurrency=20,
        revision=REVISION,
        max_instances=4,
        scaling_threshold=0.5,
        shutdown_after_seconds=3600,
        lock_modules=None,
        encrypted_fs=True,
    )
    body["node_selector"].update(gpu_count=4, include=["a100"])
    return deployed(http, miner, body)


def test_an_affine_chute_becomes_an_immutable_tee_copy(
    http: httpx.Client, suite: RunningSuite, miner: User, affine_chute: dict[str, Any], database_url: str
) -> None:
    # Another admin of the affine subnet promotes the miner's chute.
    promoter = subnet_admin(suite, 120)
    response = teeify(http, promoter, affine_chute["chute_id"])
    assert response.status_code == 200, response.text
    copy = response.json()
    tee_name = affine_chute["name"] + "-TEE"
    code = vllm_tee_code(tee_name, 4)  # 4 x a100 = 320 GB: 3 h200s, rounded to 4

    # The id and slug from the caller's username, the owner the original's.
    assert copy["chute_id"] == uuid5(f"{promoter.username}::chute::{tee_name}")
    assert copy["slug"].startswith(promoter.username.lower() + "-")
    assert (copy["user"]["user_id"], copy["user"]["username"]) == (miner.user_id, miner.username)
    assert copy["name"] == tee_name
    image = affine_chute["image"]
    assert copy["version"] == uuid5(f"{image['image_id']}:{image['patch_version']}:{code}")
    assert copy["node_selector"]["gpu_count"] == 4
    assert copy["node_selector"]["include"] == ["h200"]
    assert copy["node_selector"]["supported_gpus"] == ["h200"]
    assert (copy["tee"], copy["immutable"], copy["lock_modules"]) == (True, True, False)
    # As the real API: the new chute gets a bounty once committed, in the answer too.
    assert copy["bounty"] >= 100 and copy["compute_multiplier_factors"]["bounty_boost"] >= 1.5
    for copied in (
        "tagline", "readme", "tool_description", "logo_id", "public", "cords", "jobs", "standard_template",
        "chutes_version", "concurrency", "revision", "max_instances", "scaling_threshold",
        "shutdown_after_seconds", "allow_external_egress", "encrypted_fs",
    ):  # fmt: skip
        assert copy[copied] == affine_chute[copied], copied
    assert copy["image"]["image_id"] == image["image_id"]
    # Priced as GET /chutes/{id} answers it: 4 h200s, and the TEE factor.
    assert copy["current_estimated_price"]["usd"]["hour"] == pytest.approx(4 * 2.75)
    assert copy["compute_multiplier_factors"]["tee"] == 2.25
    # GET answers the same chute; the bounty's boost grows by the second, so it is compared apart.
    got = http.get(f"/chutes/{copy['chute_id']}").json()
    growing = ("effective_compute_multiplier", "compute_multiplier_factors")
    assert {k: v for k, v in got.items() if k not in growing} == {
        k: v for k, v in copy.items() if k not in growing
    }
    assert got["compute_multiplier_factors"]["bounty_boost"] == pytest.approx(
        copy["compute_multiplier_factors"]["bounty_boost"], rel=1e-3
    )

    assert http.get(f"/chutes/code/{copy['chute_id']}").text == code

    async def stored() -> tuple[Any, list[Any]]:
        connection = await asyncpg.connect(database_url)
        try:
            row = await connection.fetchrow(
                "SELECT node_selector, filename, ref_str, username FROM registry.chutes WHERE chute_id = $1",
                copy["chute_id"],
            )
            events = await connection.fetch(
                "SELECT kind, payload FROM registry.outbox WHERE payload->>'chute_id' = $1", copy["chute_id"]
            )
            return row, events
        finally:
            await connection.close()

    row, events = asyncio.run(stored())
    assert json.loads(row["node_selector"]) == {"gpu_count": 4, "include": ["h200"]}
    assert (row["filename"], row["ref_str"], row["username"]) == ("affine.py", "affine:chute", miner.username)
    assert [(e["kind"], json.loads(e["payload"])) for e in events] == [
        ("chute_created", {"chute_id": copy["chute_id"], "version": copy["version"], "job_only": False})
    ]

    # A second call, by anyone, finds the copy; the copy itself cannot be changed.
    for caller in (promoter, miner):
        assert detail(teeify(http, caller, affine_chute["chute_id"]), 409) == (
            f"TEE version already exists: {copy['chute_id']}"
        )
    updated = http.put(f"/chutes/{copy['chute_id']}", json={"tagline": "x"}, headers=key(miner))
    assert detail(updated, 403) == "This chute is immutable and cannot be modified. Only deletion is allowed."


def test_checks_in_the_real_order(
    http: httpx.Client, suite: RunningSuite, miner: User, affine_chute: dict[str, Any]
) -> None:
    chute_id = affine_chute["chute_id"]
    assert teeify(http, None, chute_id).status_code == 401
    assert detail(teeify(http, miner, "not-a-uuid"), 400) == "Must use chute UUID for teeify."
    assert detail(teeify(http, miner, affine_chute["name"].split("/")[-1]), 400) == (
        "Must use chute UUID for teeify."
    )
    assert detail(teeify(http, miner, str(uuid.uuid4())), 404) == "Chute not found"
    # Neither an ordinary user nor the admin of another subnet may promote an affine chute.
    babelbit_admin = subnet_admin(suite, 59, image=True)
    for outsider in (new_user(suite), babelbit_admin):
        assert detail(teeify(http, outsider, chute_id), 403) == "Only subnet admins can promote chutes to TEE"
    # An admin of its own subnet may not promote a chute without "affine" in its name.
    babelbit = deployed(
        http,
        babelbit_admin,
        deploy_body("my-babelbit-" + uuid.uuid4().hex[:6], f"{babelbit_admin.username}/vllm:1"),
    )
    assert detail(teeify(http, babelbit_admin, babelbit["chute_id"]), 400) == (
        "Only chutes with 'affine' in the name can be TEE-ified"
    )
    # A chute in no subnet: nobody is its subnet admin.
    plain = deployed(http, miner, deploy_body("plain-" + uuid.uuid4().hex[:6], f"{miner.username}/vllm:1"))
    assert (
        detail(teeify(http, miner, plain["chute_id"]), 403) == "Only subnet admins can promote chutes to TEE"
    )


def test_code_that_cannot_be_rewritten_is_a_400_and_creates_nothing(http: httpx.Client, miner: User) -> None:
    name = "affine-echo-" + uuid.uuid4().hex[:6]
    chute = deployed(
        http,
        miner,
        deploy_body(name, f"{miner.username}/vllm:1", code="chute = make_affine_chute(username='x')\n"),
    )
    problem = detail(teeify(http, miner, chute["chute_id"]), 400)
    assert problem == (
        "Cannot rewrite the chute's code for TEE: it has no call to "
        "build_sglang_chute, build_vllm_chute, Chute"
    )
    assert http.get(f"/chutes/{uuid5(f'{miner.username}::chute::{name}-TEE')}").status_code == 404
