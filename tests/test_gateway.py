"""What the gateway itself does to REST and gRPC traffic, through a real Envoy.

Each test sends what a REST client (FastAPI's conventions) or a gRPC client would send and checks
status, headers and body as that client would see them.
"""

from __future__ import annotations

import hashlib
import json
import os

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
from gateway.render import BENCH_DIRECT_PATH, MAX_JSON_BODY_BYTES
from services.kit.server import MAX_REQUEST_MESSAGE_BYTES
from tests.conftest import EchoGateway
from tests.echo_services import TRICKY_DETAIL


@pytest.fixture
def http(echo_gateway: EchoGateway) -> httpx.Client:
    with httpx.Client(base_url=echo_gateway.url, timeout=30) as client:
        yield client  # type: ignore[misc]


def assert_json_error(response: httpx.Response, status: int) -> object:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert not any(h.startswith("grpc-") or h.startswith("x-http-") for h in response.headers)
    body = response.json()
    assert set(body) == {"detail"}
    return body["detail"]


# ---- errors ----------------------------------------------------------------------------------


def test_unknown_path_is_404_json(http: httpx.Client) -> None:
    assert assert_json_error(http.get("/definitely/not/here"), 404) == "Not Found"
    assert assert_json_error(http.post("/bounties/x/y/unknown_verb", json={}), 404) == "Not Found"


def test_a_known_path_with_an_undeclared_method_is_405_with_allow(http: httpx.Client) -> None:
    """FastAPI's answer: 405 and the methods some route takes the path with."""
    for method, path, allow in [
        ("DELETE", "/users/me", "GET, HEAD"),
        ("GET", "/users/register", "POST"),
        ("POST", "/chutes/boosted", "DELETE, GET, HEAD, PUT"),  # also /chutes/{chute_id_or_name}
        ("PATCH", "/jobs/job-1", "DELETE, GET, HEAD, POST, PUT"),
        ("PUT", "/api_keys/?limit=3", "GET, HEAD, POST"),
        # `{chute_id_or_name=**}` spans slashes, as FastAPI's `{chute_id_or_name:path}` does.
        ("POST", "/chutes/x/y/z/unknown_verb", "GET, HEAD, PUT"),
    ]:
        response = http.request(method, path)
        assert assert_json_error(response, 405) == "Method Not Allowed", (method, path)
        assert response.headers["allow"] == allow, (method, path)
    # A method the gateway does not take at all: a plain 400, as uvicorn's, not a body error.
    for method in ("QUERY", "FOO"):
        assert assert_json_error(http.request(method, "/users/me", content=b"{}"), 400) == "Bad Request"
    # Where another template takes the method, the request reaches that RPC as before.
    assert http.delete("/chutes/boosted").status_code != 405
    assert http.get("/chutes/boosted").status_code == 200
    assert http.head("/users/me").status_code != 405


def test_malformed_json_is_fastapi_422(http: httpx.Client) -> None:
    response = http.post(
        "/chutes/share", content=b'{"chute_id_or_name": ', headers={"content-type": "application/json"}
    )
    [error] = assert_json_error(response, 422)  # type: ignore[misc]
    assert error["type"] == "json_invalid"
    assert error["loc"] == ["body", 0]
    assert error["msg"] == "JSON decode error"


@pytest.mark.parametrize(
    ("method", "path", "body", "loc", "kind", "value"),
    [
        ("GET", "/chutes/?limit=abc", None, ["query", "limit"], "int_parsing", "abc"),
        ("GET", "/chutes/?include_public=maybe", None, ["query", "include_public"], "bool_parsing", "maybe"),
        ("POST", "/chutes/?accept_fee=nope", {}, ["query", "accept_fee"], "bool_parsing", "nope"),
        ("POST", "/chutes/?accept_fee=true", {"name": 5}, ["body", "name"], "string_type", "5"),
        (
            "POST",
            "/chutes/",
            {"node_selector": {"gpu_count": "many"}},
            ["body", "node_selector", "gpu_count"],
            "int_parsing",
            "many",
        ),
        (
            "POST",
            "/chutes/share",
            {"chute_id_or_name": True},
            ["body", "chute_id_or_name"],
            "string_type",
            "true",
        ),
    ],
)
def test_wrong_type_is_fastapi_422_with_location(
    http: httpx.Client, method: str, path: str, body: object, loc: list[str], kind: str, value: str
) -> None:
    response = http.request(method, path, json=body) if body is not None else http.request(method, path)
    [error] = assert_json_error(response, 422)  # type: ignore[misc]
    assert error["loc"] == loc
    assert error["type"] == kind
    assert error["input"] == value


def test_body_too_large_is_413_json(http: httpx.Client) -> None:
    big = json.dumps({"name": "x", "readme": "r" * (MAX_JSON_BODY_BYTES + 1024)})
    response = http.post(
        "/chutes/?accept_fee=true", content=big, headers={"content-type": "application/json"}
    )
    assert assert_json_error(response, 413) == "Request Entity Too Large"


def test_chunked_body_too_large_is_413_json(http: httpx.Client) -> None:
    # No content-length: the gateway cannot refuse up front; the service's message limit answers.
    def chunks() -> object:
        yield b'{"name": "x", "readme": "'
        for _ in range(MAX_REQUEST_MESSAGE_BYTES // (1 << 20) + 1):
            yield b"r" * (1 << 20)
        yield b'"}'

    response = http.post(
        "/chutes/?accept_fee=true", content=chunks(), headers={"content-type": "application/json"}
    )
    assert assert_json_error(response, 413) == "Request Entity Too Large"


def test_service_error_message_survives_escaping(http: httpx.Client) -> None:
    response = http.post("/chutes/share", json={"chute_id_or_name": "a", "user_id_or_name": "b"})
    assert assert_json_error(response, 404) == TRICKY_DETAIL


def test_service_chosen_status_402(http: httpx.Client) -> None:
    response = http.post("/chutes/?accept_fee=false", json={"name": "paid"})
    assert "--accept-fee" in str(assert_json_error(response, 402))


def test_service_validation_error_is_fastapi_422(http: httpx.Client) -> None:
    response = http.post("/chutes/?accept_fee=true", json={"name": "invalid"})
    assert assert_json_error(response, 422) == [
        {
            "loc": ["body", "name"],
            "msg": "String should have at least 3 characters",
            "type": "string_too_short",
        }
    ]


def test_unexpected_error_is_500_without_trace(http: httpx.Client) -> None:
    response = http.post("/chutes/?accept_fee=true", json={"name": "crash"})
    assert assert_json_error(response, 500) == "Internal server error"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_unimplemented_rpc_is_501_naming_it(http: httpx.Client) -> None:
    detail = assert_json_error(http.get("/users/me"), 501)
    assert detail == "/chutes.identity.v1.IdentityService/GetCurrentUser is not implemented yet"


# ---- request parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("True", True),
        ("False", False),
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("on", True),
        ("off", False),
        ("yes", True),
        ("no", False),
        ("t", True),
        ("f", False),
    ],
)
def test_fastapi_boolean_query_forms(http: httpx.Client, value: str, expected: bool) -> None:
    response = http.get(f"/chutes/?include_public={value}&name=on")
    assert response.status_code == 200, response.text
    [item] = response.json()["items"]
    assert item["public"] is expected
    assert item["name"] == "on"  # only boolean parameters are reinterpreted


def test_unknown_query_parameters_and_body_fields_are_ignored(http: httpx.Client) -> None:
    response = http.get("/chutes/?not_a_param=1&limit=5&page=2&also=x")
    assert response.status_code == 200, response.text
    assert (response.json()["limit"], response.json()["page"]) == (5, 2)
    deploy = http.post(
        "/chutes/?accept_fee=true",
        json={
            "name": "n",
            "public": True,
            "surprise": {"a": [1]},
            "logo_id": None,
            "node_selector": {"gpu_count": 2},
        },
    )
    assert deploy.status_code == 200, deploy.text
    assert deploy.json()["name"] == "n" and deploy.json()["public"] is True
    assert deploy.json()["node_selector"]["gpu_count"] == 2


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/images/cliowner/cli-base:1.0", "image_id", "cliowner/cli-base:1.0"),
        ("/chutes/org/model-name", "chute_id", "org/model-name"),
        ("/chutes/0d3f1c2e-0000-4000-8000-000000000000", "chute_id", "0d3f1c2e-0000-4000-8000-000000000000"),
    ],
)
def test_path_variables_carry_slashes_and_colons(
    http: httpx.Client, path: str, field: str, value: str
) -> None:
    response = http.get(path)
    assert response.status_code == 200, response.text
    assert response.json()[field] == value


def test_trailing_slash_forms_reach_the_same_rpc(http: httpx.Client) -> None:
    assert http.get("/chutes/").json() == http.get("/chutes").json()


# ---- response shapes -------------------------------------------------------------------------


def test_every_primitive_field_is_printed_in_snake_case(http: httpx.Client) -> None:
    body = http.get("/chutes/abc").json()
    assert body["hot"] is False and body["public"] is False and body["invocation_count"] == 0
    assert body["slug"] == "" and body["cords"] == [] and body["created_at"] == "2023-11-14T22:13:20Z"
    listed = http.get("/chutes/").json()
    assert {"total", "page", "limit", "items", "cord_refs"} <= set(listed)
    # Keys the published CLI indexes on every list item (created_at is set by real services).
    assert {"chute_id", "name", "hot", "slug", "cord_ref_id"} <= set(listed["items"][0])
    assert isinstance(listed["total"], int)


def test_bare_arrays(http: httpx.Client) -> None:
    boosted = http.get("/chutes/boosted")
    assert boosted.status_code == 200
    assert boosted.headers["content-type"] == "application/json"
    assert boosted.json() == [{"chute_id": "c1", "name": "one", "boost": 1.5}]
    assert http.get("/chutes/rolling_updates").json() == []


def test_code_is_text_plain(http: httpx.Client) -> None:
    response = http.get("/chutes/code/abc")
    assert response.headers["content-type"] == "text/plain"
    assert response.text == "# abc\n"


def test_warmup_streams_server_sent_events(http: httpx.Client) -> None:
    with http.stream("GET", "/chutes/warmup/org/model") as response:
        assert response.headers["content-type"] == "text/event-stream"
        frames = [line for line in response.iter_lines() if line.startswith("data:")]
    assert [json.loads(f[5:])["status"] for f in frames] == ["cold", "cold", "hot"]
    assert json.loads(frames[0][5:])["log"] == "org/model"


def test_large_upload_streams_to_the_service(http: httpx.Client) -> None:
    payload = os.urandom(24 * 1024 * 1024)  # beyond the JSON body limit: must stream, not buffer
    response = http.put(
        "/jobs/job-1/upload?token=t", content=payload, headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == hashlib.sha256(payload).hexdigest()
    assert body["path"] == str(len(payload))
    assert body["file_id"] == "job-1"


def test_large_download_streams(http: httpx.Client) -> None:
    size = 20 * 1024 * 1024 + 7
    with http.stream("GET", f"/jobs/job-1/download/{size}") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        received = sum(len(chunk) for chunk in response.iter_bytes())
    assert received == size


# ---- identity headers ------------------------------------------------------------------------


def test_client_identity_headers_never_reach_services(http: httpx.Client) -> None:
    response = http.get("/chutes/", headers={"x-chutes-user-id": "forged", "X-Chutes-UserID": "also-forged"})
    assert response.status_code == 200  # X-Chutes-UserID (sent by the published CLI) is not rejected
    [item] = response.json()["items"]
    assert item["tagline"] == ""  # what the service saw as x-chutes-user-id
    assert item["readme"] == ""  # what the service saw as x-chutes-userid


def test_native_grpc_client_forged_identity_is_stripped(echo_gateway: EchoGateway) -> None:
    with grpc.insecure_channel(echo_gateway.grpc_target) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        reply = stub.ListChutes(registry_pb2.ListChutesRequest(), metadata=(("x-chutes-user-id", "forged"),))
    assert reply.items[0].tagline == ""


# ---- native gRPC through the same port -------------------------------------------------------


def test_native_grpc_keeps_status_and_details(echo_gateway: EchoGateway) -> None:
    with grpc.insecure_channel(echo_gateway.grpc_target) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ShareChute(registry_pb2.ShareChuteRequest(chute_id_or_name="a", user_id_or_name="b"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert raised.value.details() == TRICKY_DETAIL
        status = rpc_status.from_call(raised.value)
        info = error_details_pb2.ErrorInfo()
        assert status is not None and status.details[0].Unpack(info)
        assert info.reason == "NOT_FOUND" and info.metadata["method"].endswith("/ShareChute")

        with pytest.raises(grpc.RpcError) as paid:
            stub.DeployChute(registry_pb2.DeployChuteRequest(chute=registry_pb2.ChuteArgs(name="x")))
        assert paid.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert dict(paid.value.trailing_metadata())["x-http-status"] == "402"  # type: ignore[arg-type]

        boosted = stub.ListBoostedChutes(registry_pb2.ListBoostedChutesRequest())
        assert [b.chute_id for b in boosted.items] == ["c1"]  # typed message, not a bare array


def test_bench_route_is_envoy_alone(http: httpx.Client) -> None:
    response = http.get(BENCH_DIRECT_PATH)
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_signature_check_failing_is_503_never_a_pass(http: httpx.Client) -> None:
    # The echo server does not implement the ext_authz Check: the gateway cannot verify.
    headers = {"X-Chutes-Hotkey": "5F", "X-Chutes-Nonce": "1", "X-Chutes-Signature": "00"}
    assert assert_json_error(http.get("/chutes/", headers=headers), 503) == "Service Unavailable"
    # A partial set skips the check, as the real API ignores it.
    partial = {k: v for k, v in headers.items() if k != "X-Chutes-Nonce"}
    assert http.get("/chutes/", headers=partial).status_code == 200
