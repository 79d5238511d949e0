"""Read answers served from the registry's memory are never stale (issue 14).

The registry answers a GET or a list page it has built before without asking the database
(services/registry/views.py ReadCache); every change an answer shows is announced by a trigger
and drops it (services/registry/freshness.py). Here each kind of change is made after the answer
is cached, some straight in the database as another replica or service would make them, and the
next read must show it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
from services.registry.views import (
    Answer,
    ReadCache,
    ResponseCache,
    chute_message,
    chute_view,
    dumps,
    json_body,
    view_with_live_boosts,
    with_live_boosts,
)
from tests.conftest import RunningSuite
from tests.test_identity import User
from tests.test_registry import deploy_body, deployed, http, image, key, owner  # noqa: F401

#: How long a change made outside the registry may take to reach it (the notification's trip).
SETTLE_SECONDS = 2.0


def _sql(database_url: str, statement: str, *args: Any) -> None:
    async def run() -> None:
        # The history trigger names its table unqualified, as the registry's connections see it.
        connection = await asyncpg.connect(database_url, server_settings={"search_path": "registry"})
        try:
            await connection.execute(statement, *args)
        finally:
            await connection.close()

    asyncio.run(run())


def _eventually(read: Callable[[], Any], wanted: Any) -> Any:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        got = read()
        if got == wanted or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def test_changes_made_in_the_database_reach_cached_answers(
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    image: str,  # noqa: F811
    database_url: str,
) -> None:
    name = "fresh-" + uuid.uuid4().hex[:6]
    chute_id = deployed(http, owner, deploy_body(name, image))["chute_id"]

    def shown() -> dict[str, Any]:
        got = http.get(f"/chutes/{chute_id}", headers=key(owner))
        assert got.status_code == 200, got.text
        answer: dict[str, Any] = got.json()
        return answer

    def listed() -> dict[str, Any]:
        page: dict[str, Any] = http.get("/chutes/?include_public=false", headers=key(owner)).json()
        return {item["chute_id"]: item for item in page["items"]}.get(chute_id, {})

    for _ in range(2):  # built, then cached
        assert shown()["tagline"] == "echo" and listed()["tagline"] == "echo"
    # An edit by another replica (no request through this registry).
    _sql(database_url, "UPDATE registry.chutes SET tagline = 'moved' WHERE chute_id = $1", chute_id)
    assert _eventually(lambda: shown()["tagline"], "moved") == "moved"
    assert _eventually(lambda: listed()["tagline"], "moved") == "moved"
    # The count the metrics service adds (no edit of the chute: updated_at stays).
    _sql(database_url, "UPDATE registry.chutes SET invocation_count = 77 WHERE chute_id = $1", chute_id)
    assert _eventually(lambda: shown()["invocation_count"], 77) == 77
    # An instance: the answer lists it and says hot.
    _sql(
        database_url,
        "INSERT INTO registry.instances (instance_id, chute_id, region, active, verified, last_verified_at)"
        " VALUES ($1, $2, 'eu-west', true, true, now())",
        str(uuid.uuid4()),
        chute_id,
    )
    assert _eventually(lambda: shown()["hot"], True) is True
    # A manual boost (a billing admin's, its own table).
    _sql(
        database_url, "INSERT INTO registry.chute_manual_boosts (chute_id, boost) VALUES ($1, 2.0)", chute_id
    )
    assert _eventually(lambda: shown()["compute_multiplier_factors"].get("manual_boost"), 2.0) == 2.0
    # A bounty: shown, and gone from the answer when it expires (no write marks that).
    _sql(
        database_url,
        "INSERT INTO registry.bounties (chute_id, expires_at) VALUES ($1, now() + interval '1 second')",
        chute_id,
    )
    assert _eventually(lambda: "bounty" in shown(), True) is True
    time.sleep(1.1)
    assert "bounty" not in shown()
    # Renamed elsewhere: found by its new name (and no longer by its old one).
    _sql(database_url, "UPDATE registry.chutes SET name = $2 WHERE chute_id = $1", chute_id, name + "-new")
    renamed = _eventually(lambda: http.get(f"/chutes/{name}-new", headers=key(owner)).status_code, 200)
    assert renamed == 200 and http.get(f"/chutes/{name}", headers=key(owner)).status_code == 404
    # The image (every chute on it shows it).
    _sql(
        database_url,
        "UPDATE registry.images SET readme = 'new base' WHERE image_id = $1",
        shown()["image"]["image_id"],
    )
    assert _eventually(lambda: shown()["image"]["readme"], "new base") == "new base"
    # Deleted elsewhere: not found.
    _sql(database_url, "DELETE FROM registry.chutes WHERE chute_id = $1", chute_id)
    gone = _eventually(lambda: http.get(f"/chutes/{chute_id}", headers=key(owner)).status_code, 404)
    assert gone == 404 and listed() == {}


def test_changes_through_the_api_are_read_at_once(
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    image: str,  # noqa: F811
) -> None:
    """A client that changed a chute and reads it right after sees its change, every time."""
    name = "fresh-api-" + uuid.uuid4().hex[:6]
    chute_id = deployed(http, owner, deploy_body(name, image))["chute_id"]
    for number in range(10):
        assert http.get(f"/chutes/{chute_id}", headers=key(owner)).json()["tagline"] != str(number)
        updated = http.put(f"/chutes/{chute_id}", json={"tagline": str(number)}, headers=key(owner))
        assert updated.status_code == 200, updated.text
        assert http.get(f"/chutes/{chute_id}", headers=key(owner)).json()["tagline"] == str(number)
        assert http.get(f"/chutes/{name}", headers=key(owner)).json()["tagline"] == str(number)


def _answer(chute_id: str) -> Answer:
    return Answer(chute_id, {"chute_id": chute_id}, None, None, None, None, time.monotonic())


def test_an_answer_built_while_its_chute_changed_is_not_kept() -> None:
    cache = ReadCache(ResponseCache())
    cache.start_serving()
    before = cache.generation
    cache.changed("a")  # the chute changed while its answer was being built from older rows
    cache.put(("a", None), _answer("a"), before)
    assert cache.get(("a", None)) is None
    cache.put(("a", None), _answer("a"), cache.generation)
    assert cache.get(("a", None)) is not None


@pytest.mark.parametrize(
    ("payload", "kept"),
    [("a", {("b", None)}), ("b", {("a", None)}), ("+c", set()), ("*", set())],
)
def test_what_each_notification_drops(payload: str, kept: set[tuple[str, None]]) -> None:
    cache = ReadCache(ResponseCache())
    cache.start_serving()
    for key_, chute_id in ((("a", None), "a"), (("b", None), "b"), (("name-b", None), "b")):
        cache.put(key_, _answer(chute_id), cache.generation)
    cache.put_list(("page",), object(), cache.generation)
    cache.changed(payload)
    assert {k for k in (("a", None), ("b", None), ("name-b", None)) if cache.get(k) is not None} == kept
    assert cache.get_list(("page",)) is None


def test_nothing_is_served_while_not_listening() -> None:
    cache = ReadCache(ResponseCache())
    cache.put(("a", None), _answer("a"), cache.generation)
    assert cache.get(("a", None)) is None
    cache.start_serving()
    cache.put(("a", None), _answer("a"), cache.generation)
    cache.stop_serving()
    assert cache.get(("a", None)) is None


def test_rest_reads_are_the_bytes_the_typed_answers_print(
    suite: RunningSuite,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    image: str,  # noqa: F811
) -> None:
    """REST GET and list are answered by GetChuteJson and ListChutesJson (pre-rendered JSON);
    gRPC clients keep the typed GetChute and ListChutes. One source of truth: the JSON is what
    the typed message prints, byte for byte, and the gateway passes it on unchanged."""
    name = "json-" + uuid.uuid4().hex[:6]
    chute_id = deployed(http, owner, deploy_body(name, image, readme='ünïcode "quoted"\n'))["chute_id"]
    metadata = (("authorization", key(owner)["Authorization"]),)
    with grpc.insecure_channel(suite.gateway.removeprefix("http://")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        for _ in range(2):  # built, then cached
            request = registry_pb2.GetChuteRequest(chute_id_or_name=chute_id)
            typed = stub.GetChute(request, metadata=metadata, timeout=10)
            body = stub.GetChuteJson(request, metadata=metadata, timeout=10)
            assert body.content_type == "application/json"
            assert body.data == json_body(typed).data
            rest = http.get(f"/chutes/{chute_id}", headers=key(owner))
            assert rest.headers["content-type"] == "application/json"
            assert rest.content == body.data
            assert rest.json() == json_format.MessageToDict(
                typed, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )

            listing = registry_pb2.ListChutesRequest(include_public=False, limit=5)
            typed_page = stub.ListChutes(listing, metadata=metadata, timeout=10)
            page = stub.ListChutesJson(listing, metadata=metadata, timeout=10)
            assert page.data == json_body(typed_page).data
            assert chute_id in {item.chute_id for item in typed_page.items}
            rest_page = http.get("/chutes/?include_public=false&limit=5", headers=key(owner))
            assert rest_page.content == page.data


def _printed(message: Any) -> bytes:
    # What the transcoder's print options give, through protobuf's own printer.
    return dumps(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


def test_the_json_printer_prints_what_protobuf_prints() -> None:
    """views.json_body's own printer (faster than json_format) against json_format, on messages
    with every shape the registry's answers have: Structs of every value kind, maps of doubles
    and of lists, optional fields set to zero and unset, timestamps with and without nanos."""
    schema = struct_pb2.Struct()
    schema.update(
        {"type": "object", "n": 1.5, "whole": 3, "ok": True, "none": None, "list": [1, "a", None, {"x": []}],
         "nested": {"deep": {"é": "ü\n\"q\""}}}
    )  # fmt: skip
    chute = registry_pb2.Chute(
        chute_id="c", name="ünï \"quoted\"\n", public=True, concurrency=0, boost=0.0, bounty=7,
        created_at=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=120_000_000),
        updated_at=timestamp_pb2.Timestamp(seconds=1_700_000_001),
        cords=[registry_pb2.Cord(function="f", input_schema=schema), registry_pb2.Cord()],
        jobs=[registry_pb2.JobDefinition(name="j", timeout=0, ports=[registry_pb2.Port(default=False)])],
        node_selector=registry_pb2.NodeSelector(gpu_count=1, compute_multiplier=0.1 + 0.2, include=["a"]),
        current_estimated_price=schema, supported_gpus=["h100", "a100"],
        instances=[registry_pb2.Instance(instance_id="i", active=True)],
    )  # fmt: skip
    chute.compute_multiplier_factors.update({"base": 1e-7, "tee": 2.25, "big": 1e300})
    assert json_body(chute).data == _printed(chute)
    assert json_body(registry_pb2.Chute()).data == _printed(registry_pb2.Chute())
    page = registry_pb2.ListChutesResponse(total=3, limit=25, items=[chute, registry_pb2.Chute(chute_id="d")])
    page.cord_refs["r"].extend([{"method": "POST", "stream": False}, 1.0, "s", None])
    page.cord_refs["empty"].extend([])
    assert json_body(page).data == _printed(page)


def test_anonymous_reads_by_id_skip_grpc_and_answer_the_same(
    suite: RunningSuite,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    image: str,  # noqa: F811
    database_url: str,
) -> None:
    """An anonymous `GET /chutes/<uuid>` goes to the registry's plain HTTP endpoint (no gRPC, no
    transcoder; services/registry/anonymous_reads.py): the same bytes as GetChuteJson, fresh after
    a change, and 404 alike for a chute an anonymous caller may not see."""
    name = "anon-" + uuid.uuid4().hex[:6]
    chute_id = deployed(http, owner, deploy_body(name, image))["chute_id"]
    hidden = http.get(f"/chutes/{chute_id}")
    assert (hidden.status_code, hidden.json()) == (
        404,
        {"detail": "Chute not found, or does not belong to you"},
    )
    _sql(database_url, "UPDATE registry.chutes SET public = true WHERE chute_id = $1", chute_id)

    def read() -> httpx.Response:
        got = http.get(f"/chutes/{chute_id}")
        assert got.status_code == 200, got.text
        return got

    assert _eventually(lambda: read().json()["public"], True) is True
    with grpc.insecure_channel(suite.gateway.removeprefix("http://")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        request = registry_pb2.GetChuteRequest(chute_id_or_name=chute_id)
        for _ in range(2):  # built, then cached
            body = stub.GetChuteJson(request, timeout=10)
            rest = read()
            assert rest.headers["content-type"] == "application/json"
            assert rest.content == body.data == json_body(stub.GetChute(request, timeout=10)).data
    # The same answer with a query string; by name and with credentials: the transcoded way.
    assert http.get(f"/chutes/{chute_id}?x=1").content == body.data
    assert http.get(f"/chutes/{name}").content == body.data
    assert http.get(f"/chutes/{chute_id}", headers=key(owner)).json()["chute_id"] == chute_id
    _sql(database_url, "UPDATE registry.chutes SET tagline = 'anon' WHERE chute_id = $1", chute_id)
    assert _eventually(lambda: read().json()["tagline"], "anon") == "anon"
    _sql(database_url, "UPDATE registry.chutes SET public = false WHERE chute_id = $1", chute_id)
    assert _eventually(lambda: http.get(f"/chutes/{chute_id}").status_code, 404) == 404


def _chute_row(**changes: Any) -> dict[str, Any]:
    """A whole chute row as store.get_chute reads it (chute, image as `i_*`, instances, live)."""
    created = datetime(2024, 3, 1, 12, 0, 5, tzinfo=UTC)
    row: dict[str, Any] = {
        "chute_id": "c1",
        "user_id": "u1",
        "username": "alice",
        "name": "alice/echo",
        "tagline": "t",
        "readme": "# r\n",
        "tool_description": None,
        "image_id": "i1",
        "logo_id": None,
        "public": True,
        "standard_template": None,
        "cords": json.dumps(
            [
                {
                    "method": "POST",
                    "path": "/echo",
                    "function": "echo",
                    "stream": False,
                    "input_schema": {
                        "type": "object",
                        "properties": {
                            "n": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 2.5,
                                "default": None,
                                "enum": [1, "a", True],
                            }
                        },
                    },
                }
            ]
        ),
        "jobs": "[]",
        "node_selector": json.dumps({"gpu_count": 1, "min_vram_gb_per_gpu": 16}),
        "slug": "alice-echo",
        "version": "v1",
        "concurrency": None,
        "boost": None,
        "chutes_version": "0.6.9",
        "revision": None,
        "openrouter": False,
        "discount": None,
        "max_instances": None,
        "scaling_threshold": None,
        "shutdown_after_seconds": None,
        "allow_external_egress": False,
        "encrypted_fs": False,
        "tee": False,
        "lock_modules": None,
        "immutable": False,
        "disabled": False,
        "invocation_count": 12,
        "created_at": created,
        "updated_at": created.replace(microsecond=120000),
        "i_image_id": "i1",
        "i_user_id": "u1",
        "i_username": "alice",
        "i_name": "echo",
        "i_tag": "1",
        "i_readme": "",
        "i_logo_id": None,
        "i_public": True,
        "i_status": "built and pushed",
        "i_chutes_version": "0.6.9",
        "i_patch_version": None,
        "i_build_started_at": None,
        "i_build_completed_at": created.replace(microsecond=123456),
        "i_created_at": created,
        "instances": "[]",
        "bounty_age": None,
        "bounty_left": None,
        "manual_boost": None,
    }
    row.update(changes)
    return row


_CHUTE_ROWS = {
    "plain": _chute_row(),
    "every optional set to zero": _chute_row(
        concurrency=0,
        boost=0,
        max_instances=0,
        shutdown_after_seconds=0,
        scaling_threshold=0,
        lock_modules=False,
        tool_description="",
        revision="",
        logo_id="",
        discount=0.0,
    ),
    "private, tee, boosted, selector with lists": _chute_row(
        public=False,
        tee=True,
        boost=2,
        concurrency=8,
        max_instances=3,
        scaling_threshold=0.75,
        lock_modules=True,
        logo_id="logo",
        i_logo_id="ilogo",
        revision="abc",
        i_patch_version="p1",
        node_selector=json.dumps(
            {
                "gpu_count": 2,
                "min_vram_gb_per_gpu": 48,
                "include": ["h100", "a100"],
                "max_hourly_price_per_gpu": 3,
            }
        ),
        created_at=datetime(2023, 1, 1, tzinfo=UTC),
        i_build_started_at=datetime(2024, 1, 1, 0, 0, 0, 1000),
    ),
    "vllm, jobs, instances": _chute_row(
        standard_template="vllm",
        name='unsloth/Llama é "q"',
        jobs=json.dumps(
            [
                {
                    "name": "train",
                    "upload": True,
                    "timeout": 0,
                    "disk_gb": 10,
                    "ports": [{"name": "p", "port": 8000, "proto": "tcp", "default": False}],
                },
                {"name": "plain"},
            ]
        ),
        instances=json.dumps(
            [
                {
                    "instance_id": "n1",
                    "region": "us",
                    "active": True,
                    "verified": True,
                    "last_verified_at": "2024-05-01T10:00:00.5+00:00",
                },
                {
                    "instance_id": "n2",
                    "region": "eu",
                    "active": False,
                    "verified": False,
                    "last_verified_at": None,
                },
            ]
        ),
        cords=json.dumps(
            [
                {
                    "method": "GET",
                    "path": "/a",
                    "function": "a",
                    "stream": True,
                    "output_schema": {"x": [{"y": 1e-7}, 1e300]},
                    "minimal_input_schema": "no",
                },
                {"function": "b"},
            ]
        ),
    ),
}


@pytest.mark.parametrize("row", _CHUTE_ROWS.values(), ids=_CHUTE_ROWS.keys())
@pytest.mark.parametrize("priced", [True, False])
def test_a_printed_answer_is_what_its_typed_message_prints(row: dict[str, Any], priced: bool) -> None:
    """A REST GET that missed the cache prints the row's values without building the protobuf
    message (views.chute_view); it must be the same bytes the typed answer prints, with and
    without live bounties and boosts."""
    message = chute_message(row, priced=priced, tao_usd=450.0)
    view = chute_view(row, priced=priced, tao_usd=450.0)
    assert dumps(view) == json_body(message).data
    lives = (
        {"bounty_age": None, "manual_boost": None},
        {"bounty_age": 30.5, "manual_boost": None},
        {"bounty_age": None, "manual_boost": 1.5},
        {"bounty_age": 4000.0, "manual_boost": 0.5},
    )
    for live in lives:
        assert dumps(view_with_live_boosts(view, live)) == json_body(with_live_boosts(message, live)).data
    if priced:  # cached answers are priced (GET): either rendering first, the other made from it
        for live in lives:
            rest_first = Answer("c1", row, 450.0, None, None, None, 0.0)
            assert (
                rest_first.json(live)
                == json_body(rest_first.message(live)).data
                == json_body(with_live_boosts(message, live)).data
            )
            grpc_first = Answer("c1", row, 450.0, None, None, None, 0.0)
            assert json_body(grpc_first.message(live)).data == grpc_first.json(live)
            assert rest_first.row is None and grpc_first.row is None  # the row is not kept
    listed = chute_message(row, priced=priced, tao_usd=450.0, in_list=True)
    assert dumps(chute_view(row, priced=priced, tao_usd=450.0, in_list=True)) == json_body(listed).data
