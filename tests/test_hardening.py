"""Issue 16, black-box through the real gateway: scoped keys act only on the object they were
scoped to, and bad input of any kind is a clear 4xx `{"detail": ...}`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSuite
from tests.test_identity import User, admin
from tests.test_registry import SDK_VERSION, deploy_body, deployed, key, owner, uuid5  # noqa: F401


@pytest.fixture(scope="module")
def http(suite: RunningSuite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=suite.gateway, timeout=30) as client:
        yield client


def scoped_key(http: httpx.Client, user: User, *scopes: dict[str, Any]) -> dict[str, str]:
    made = http.post(
        "/api_keys/",
        json={"name": "scoped-" + uuid.uuid4().hex[:6], "admin": False, "scopes": list(scopes)},
        headers=key(user),
    )
    assert made.status_code == 200, made.text
    return {"Authorization": made.json()["secret_key"]}


def new_image(suite: RunningSuite, user: User, name: str) -> str:
    admin(suite, "add-image", "--username", user.username, "--name", name, "--tag", "1",
          "--chutes-version", SDK_VERSION)  # fmt: skip
    return uuid5(f"{user.username}/{name}:1".lower())


# ---- 1. the object acted on is the object authorized ------------------------------------------


def test_a_key_scoped_to_one_chute_cannot_reach_its_owners_others(
    http: httpx.Client,
    suite: RunningSuite,
    owner: User,  # noqa: F811
) -> None:
    image = new_image(suite, owner, "scope-" + uuid.uuid4().hex[:6])
    reference = f"{owner.username}/{http.get(f'/images/{image}', headers=key(owner)).json()['name']}:1"
    mine = deployed(http, owner, deploy_body("scope-x-" + uuid.uuid4().hex[:6], reference))["chute_id"]
    other = deployed(http, owner, deploy_body("scope-y-" + uuid.uuid4().hex[:6], reference))["chute_id"]
    only_x = scoped_key(http, owner, {"object_type": "chutes", "object_id": mine})

    # A query parameter naming the path variable is ignored (FastAPI ignores it too).
    got = http.get(f"/chutes/{mine}?chute_id_or_name={other}", headers=only_x)
    assert got.status_code == 200 and got.json()["chute_id"] == mine, got.text
    for spelled in ("chute_id_or_name", "chute%5Fid%5For%5Fname", "chute_id_or_name.x"):
        got = http.get(f"/chutes/nonexistent-{uuid.uuid4().hex[:6]}?{spelled}={other}", headers=key(owner))
        assert got.status_code in (404, 422) and got.json()["detail"], (spelled, got.text)
    put = http.put(f"/chutes/{mine}?chute_id_or_name={other}", json={"tagline": "moved"}, headers=only_x)
    assert put.status_code == 200 and put.json()["chute_id"] == mine, put.text
    # A body field naming the path variable (`body: "*"`) does not choose the object either.
    put = http.put(f"/chutes/{mine}", json={"tagline": "body", "chute_id_or_name": other}, headers=only_x)
    assert put.status_code == 422 and put.json()["detail"][0]["loc"] == ["body", "chute_id_or_name"]
    put = http.put(f"/chutes/{mine}", json={"tagline": "body", "chuteIdOrName": other}, headers=only_x)
    # The JSON spelling: refused, or the path's object (never the body's).
    assert put.status_code == 422 or put.json()["chute_id"] == mine, put.text
    put = http.put(f"/chutes/{mine}?chuteIdOrName={other}", json={"tagline": "q"}, headers=only_x)
    assert put.status_code == 200 and put.json()["chute_id"] == mine, put.text
    assert http.get(f"/chutes/{other}", headers=key(owner)).json()["tagline"] == "echo"

    deleted = http.delete(f"/chutes/{mine}?chute_id={other}", headers=only_x)
    assert deleted.status_code == 200 and deleted.json()["chute_id"] == mine, deleted.text
    assert http.get(f"/chutes/{other}", headers=key(owner)).status_code == 200  # untouched
    assert http.delete(f"/chutes/{other}", headers=only_x).status_code == 401


def test_a_key_scoped_to_one_image_cannot_reach_its_owners_others(
    http: httpx.Client,
    suite: RunningSuite,
    owner: User,  # noqa: F811
) -> None:
    mine = new_image(suite, owner, "img-x-" + uuid.uuid4().hex[:6])
    other = new_image(suite, owner, "img-y-" + uuid.uuid4().hex[:6])
    only_x = scoped_key(http, owner, {"object_type": "images", "object_id": mine})
    got = http.get(f"/images/{mine}?image_id_or_name={other}", headers=only_x)
    assert got.status_code == 200 and got.json()["image_id"] == mine, got.text
    deleted = http.delete(f"/images/{mine}?image_id={other}", headers=only_x)
    assert deleted.status_code == 200 and deleted.json()["image_id"] == mine, deleted.text
    assert http.get(f"/images/{other}", headers=key(owner)).status_code == 200


def test_a_repeated_query_parameter_takes_its_last_value(http: httpx.Client) -> None:
    listed = http.get("/chutes/?limit=1&limit=2&include_public=true")
    assert listed.status_code == 200, listed.text
    assert listed.json()["limit"] == 2


# ---- 4. malformed hotkey signatures are a 401, never a 503 with a traceback ---------------


def test_malformed_signatures_and_absurd_nonces_are_401(http: httpx.Client, suite: RunningSuite) -> None:
    from tests.test_identity import Hotkey

    hotkey = Hotkey.new()
    good = hotkey.headers("me")
    cases: list[dict[str, str | bytes]] = [
        {**good, "X-Chutes-Nonce": "9" * 5000},
        {**good, "X-Chutes-Nonce": b"\xb9\xb2\xb3"},  # superscript digits: str.isdigit() says yes
        {**good, "X-Chutes-Nonce": "-1"},
        {**good, "X-Chutes-Signature": "zz"},
        {**good, "X-Chutes-Signature": "0x"},
        {**good, "X-Chutes-Signature": b"\xe9" * 128},
        {**good, "X-Chutes-Signature": "ab" * 3000},  # under the 8 KiB head limit (else 431)
        {**good, "X-Chutes-Hotkey": "not-a-hotkey"},
        {**good, "X-Chutes-Hotkey": b"\xff" * 48},
        {**good, "X-Chutes-Hotkey": "z" * 5000},
    ]
    logged = len(suite.stderr_lines)
    for headers in cases:
        response = http.get("/users/me", headers=headers)
        assert response.status_code == 401, (headers, response.status_code, response.text)
        assert isinstance(response.json()["detail"], str)
    time.sleep(0.3)  # the services' stderr arrives through up's pipes
    assert not [line for line in suite.stderr_lines[logged:] if "Traceback" in line]


# ---- 11. a wrong secret on a real key id is cheap -------------------------------------------


def test_wrong_secrets_on_a_real_key_id_are_cheap(
    http: httpx.Client, suite: RunningSuite, database_url: str
) -> None:
    import asyncio
    import secrets
    import string

    import asyncpg

    from tests.test_identity import new_user

    user = new_user(suite)
    made = http.post("/api_keys/", json={"name": "never-used", "admin": True}, headers=key(user)).json()
    real = made["secret_key"]
    alphabet = string.ascii_letters + string.digits
    started = time.monotonic()
    for _ in range(20):  # argon2 each time was ~190 ms of identity's CPU per request
        wrong = real[:-32] + "".join(secrets.choice(alphabet) for _ in range(32))
        assert http.get("/users/me", headers={"Authorization": wrong}).status_code == 401
    assert time.monotonic() - started < 1.5
    assert http.get("/users/me", headers={"Authorization": real}).status_code == 200

    # A key stored before digests verifies with argon2 once, and gets its digest.
    async def forget_digest() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "UPDATE identity.api_keys SET key_digest = NULL WHERE api_key_id = $1", made["api_key_id"]
            )
        finally:
            await connection.close()

    async def digest() -> str | None:
        connection = await asyncpg.connect(database_url)
        try:
            value: str | None = await connection.fetchval(
                "SELECT key_digest FROM identity.api_keys WHERE api_key_id = $1", made["api_key_id"]
            )
            return value
        finally:
            await connection.close()

    asyncio.run(forget_digest())
    time.sleep(4.5)  # the services' caches of the key's answer expire (auth.CACHE_SECONDS)
    assert http.get("/users/me", headers={"Authorization": real}).status_code == 200
    assert asyncio.run(digest()) is not None


# ---- 5. a request head over the limit is a 431 JSON, whatever its size -----------------------


@pytest.mark.parametrize("size", [7_000, 8_300, 9_000, 12_000, 15_000, 17_000, 70_000])
def test_headers_over_the_limit_are_431_json(http: httpx.Client, size: int) -> None:
    response = http.get("/chutes/", headers={"X-Padding": "p" * size})
    if size < 7_500:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 431, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Request Header Fields Too Large"}


def test_too_many_headers_are_431_json(http: httpx.Client) -> None:
    response = http.get("/chutes/", headers={f"x-h{i}": "1" for i in range(150)})
    assert response.status_code == 431, response.text
    assert response.json() == {"detail": "Request Header Fields Too Large"}


# ---- 6/8. no answer names the gateway's insides -------------------------------------------

INTERNAL_WORDS = ("upstream", "envoy", "reset reason", "proto", "googleapis", "chutes.", "TYPE_", "grpc")


def assert_clean_4xx(response: httpx.Response, status: int | None = None) -> Any:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]  # valid JSON, whatever the request held
    text = response.text.lower()
    assert not [w for w in INTERNAL_WORDS if w.lower() in text], response.text
    return detail


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "admin": False, "scopes": [{}] * 1000},
        {"name": "x" * 100_000, "admin": True},
        {"name": "x", "scopes": "notalist"},
        {"name": "x", "scopes": [1, 2]},
        {"name": {"a": 1}},
        {"name": [1]},
        [1, 2],
        "str",
    ],
)
def test_bad_bodies_are_clean_4xx(http: httpx.Client, suite: RunningSuite, body: Any) -> None:
    from tests.test_identity import new_user

    user = new_user(suite)
    assert_clean_4xx(http.post("/api_keys/", json=body, headers=key(user)))


def test_bad_json_is_clean_4xx(http: httpx.Client) -> None:
    for content in (b'{"name": "x", "admin": tru', b'\xff\xfe{"name": "\xc3\x28"}', b"\x00"):
        response = http.post(
            "/chutes/?accept_fee=true", content=content, headers={"content-type": "application/json"}
        )
        assert_clean_4xx(response)
    nested = {"name": "x", "node_selector": [1], "cords": [{"input_schema": 5}]}
    for field, value in nested.items():
        assert_clean_4xx(http.post("/chutes/?accept_fee=true", json={"name": "x", field: value}))


# ---- 7. the JSON body limit holds for chunked and gRPC bodies, without reading them whole -----


def test_a_huge_chunked_body_is_refused_early(suite: RunningSuite) -> None:
    import select
    import socket

    from gateway.render import MAX_JSON_BODY_BYTES

    host, port = suite.gateway.removeprefix("http://").split(":")
    chunk = b"x" * (1 << 20)
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /chutes/?accept_fee=true HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
            b'16\r\n{"name":"x","readme":"\r\n'  # valid JSON so far, and it goes on
        )
        answer = b""
        try:
            while sent < 200 * (1 << 20):
                if select.select([connection], [], [], 0)[0]:
                    break  # answered (or closed) before the body ended
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending
        while b"\r\n\r\n" not in answer:
            more = connection.recv(65536)
            if not more:
                break
            answer += more
    assert sent < 4 * MAX_JSON_BODY_BYTES, sent  # refused once past the limit, not after 200 MiB
    head = answer.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"application/json" in head


def test_a_native_grpc_message_over_the_limit_is_refused(suite: RunningSuite) -> None:
    import grpc

    from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
    from gateway.render import MAX_JSON_BODY_BYTES

    request = registry_pb2.DeployChuteRequest()
    request.chute.readme = "r" * (MAX_JSON_BODY_BYTES + 1024)
    with grpc.insecure_channel(suite.gateway.removeprefix("http://")) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            registry_pb2_grpc.RegistryServiceStub(channel).DeployChute(request, timeout=30)
    assert refused.value.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.OK)


# ---- 12. slow and idle clients ---------------------------------------------------------------


def test_a_slowloris_head_is_cut_off(suite: RunningSuite) -> None:
    import socket

    from gateway.render import REQUEST_HEADERS_TIMEOUT

    host, port = suite.gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=float(REQUEST_HEADERS_TIMEOUT[:-1]) + 5) as c:
        c.sendall(b"GET /chutes/ HTTP/1.1\r\nHost: x\r\n")  # ...and the rest never comes
        started = time.monotonic()
        answer = b""
        while more := c.recv(65536):
            answer += more
        assert time.monotonic() - started < float(REQUEST_HEADERS_TIMEOUT[:-1]) + 3
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


def test_edge_limits_are_rendered() -> None:
    from gateway.render import IDLE_TIMEOUT, render
    from services.kit.settings import SERVICE_NAMES

    addresses = {name: f"127.0.0.1:{1000 + i}" for i, name in enumerate(SERVICE_NAMES)}
    config = render(addresses, authz_address="127.0.0.1:999", port=1, xds_address="127.0.0.1:7")
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["common_http_protocol_options"]["idle_timeout"] == IDLE_TIMEOUT
    assert hcm["request_headers_timeout"]
    assert "stream_idle_timeout" not in hcm and "request_timeout" not in hcm  # SSE, uploads
    [monitor] = config["overload_manager"]["resource_monitors"]
    assert monitor["typed_config"]["max_active_downstream_connections"] > 0


# ---- 2/3. NUL and invalid UTF-8 anywhere: a 400 or 422 whose body is valid JSON -------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/chutes/share", {"chute_id_or_name": "a", "user_id_or_name": "b\u0000c"}),
        ("GET", "/chutes/?name=%FF%FE", None),
        ("GET", "/images/?name=%00", None),
        ("GET", "/chutes/?limit=%FF", None),  # echoed in the 422: was not valid JSON
        ("GET", "/chutes/?include_public=%C3%28", None),
        ("DELETE", "/api_keys/%00", None),
        ("GET", "/chutes/%FF/evidence", None),
        ("POST", "/jobs/%FF/x", {}),
    ],
)
def test_nul_and_invalid_utf8_are_json_4xx(
    http: httpx.Client, suite: RunningSuite, method: str, path: str, body: Any
) -> None:
    from tests.test_identity import new_user

    headers = key(new_user(suite))
    response = http.request(method, path, json=body, headers=headers) if body is not None else (
        http.request(method, path, headers=headers)
    )  # fmt: skip
    assert response.status_code in (400, 422), response.text
    assert_clean_4xx(response)


def test_the_kit_judges_the_message_a_scoped_key_acts_on() -> None:
    """Behind the gateway's fix, the services hold it too: the request message must name the
    objects of the REST path the key was judged on (services/kit/caller.py acts_on_its_path)."""
    from chutes.identity.v1 import identity_pb2
    from chutes.registry.v1 import registry_pb2
    from services.kit.caller import acts_on_its_path

    delete = "/chutes.registry.v1.RegistryService/DeleteChute"
    assert acts_on_its_path(delete, registry_pb2.DeleteChuteRequest(chute_id="X"), "DELETE", "/chutes/X?a=1")
    assert not acts_on_its_path(delete, registry_pb2.DeleteChuteRequest(chute_id="Y"), "DELETE", "/chutes/X")
    assert not acts_on_its_path(delete, registry_pb2.DeleteChuteRequest(chute_id="X"), "DELETE", "/images/X")
    image = "/chutes.registry.v1.RegistryService/DeleteImage"
    assert acts_on_its_path(image, registry_pb2.DeleteImageRequest(image_id="a b"), "DELETE", "/images/a%20b")
    update = "/chutes.registry.v1.RegistryService/UpdateChute"
    request = registry_pb2.UpdateChuteRequest(chute_id_or_name="u/n")
    assert acts_on_its_path(update, request, "PUT", "/chutes/u/n")
    assert not acts_on_its_path(update, request, "PUT", "/chutes/u/other")
    key = "/chutes.identity.v1.IdentityService/GetApiKey"
    assert acts_on_its_path(key, identity_pb2.GetApiKeyRequest(api_key_id="k"), "HEAD", "/api_keys/k/")
