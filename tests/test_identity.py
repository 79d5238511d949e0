"""Users, API keys and hotkey signatures through the real suite, as the published CLI uses them.

Keys are real sr25519 keypairs; requests are signed exactly as `chutes` 0.6.9 signs them
(official-client-wire.md 2): `hotkey:nonce:purpose` for bodiless requests, `hotkey:nonce:sha256`
of the raw body for the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
import sr25519

from services.identity.signatures import ss58_of
from tests.conftest import CHUTES_SUITE, RunningSuite


@dataclass
class Hotkey:
    public: bytes
    private: bytes

    @classmethod
    def new(cls) -> Hotkey:
        public, private = sr25519.pair_from_seed(os.urandom(32))
        return cls(public, private)

    @property
    def ss58(self) -> str:
        return ss58_of(self.public)

    def headers(self, tail: str, nonce: int | None = None) -> dict[str, str]:
        nonce = int(time.time()) if nonce is None else nonce
        message = f"{self.ss58}:{nonce}:{tail}".encode()
        signature = sr25519.sign((self.public, self.private), message).hex()
        return {"X-Chutes-Hotkey": self.ss58, "X-Chutes-Nonce": str(nonce), "X-Chutes-Signature": signature}

    def signed_body(self, body: bytes, nonce: int | None = None) -> dict[str, str]:
        return {**self.headers(hashlib.sha256(body).hexdigest(), nonce), "Content-Type": "application/json"}


@dataclass
class User:
    user_id: str
    username: str
    api_key: str
    hotkey: Hotkey


def admin(suite: RunningSuite, *args: str) -> dict[str, object]:
    result = subprocess.run([CHUTES_SUITE, "admin", *args], env=suite.env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def new_user(suite: RunningSuite, *roles: str) -> User:
    hotkey = Hotkey.new()
    username = "u" + uuid.uuid4().hex[:10]
    args = ["create-user", "--username", username, "--hotkey", hotkey.ss58]
    for role in roles:
        args += ["--role", role]
    made = admin(suite, *args)
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


@pytest.fixture(scope="module")
def http(suite: RunningSuite) -> httpx.Client:
    with httpx.Client(base_url=suite.gateway, timeout=30) as client:
        yield client  # type: ignore[misc]


@pytest.fixture(scope="module")
def alice(suite: RunningSuite) -> User:
    return new_user(suite, "public_model_deployment")


@pytest.fixture(scope="module")
def bob(suite: RunningSuite) -> User:
    return new_user(suite)


def detail_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    return detail


# ---- hotkey signatures ---------------------------------------------------------------------


def test_signed_get_with_purpose(http: httpx.Client, alice: User) -> None:
    response = http.get("/users/me", headers=alice.hotkey.headers("me"))
    assert response.status_code == 200, response.text
    me = response.json()
    assert (me["user_id"], me["username"], me["hotkey"]) == (alice.user_id, alice.username, alice.hotkey.ss58)
    assert me["permissions_bitmask"] & 2048 and "public_model_deployment" in me["permissions"]


def test_signed_post_over_the_exact_body(http: httpx.Client, alice: User) -> None:
    body = json.dumps(
        {"name": "signed-" + uuid.uuid4().hex[:6], "admin": True}, separators=(",", ":")
    ).encode()
    response = http.post("/api_keys/", content=body, headers=alice.hotkey.signed_body(body))
    assert response.status_code == 200, response.text
    assert response.json()["secret_key"].startswith("cpk_")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong body", "Invalid request signature"),
        ("stale nonce", "Invalid nonce!"),
        ("future nonce", "Invalid nonce!"),
        ("bad hex", "Invalid request signature"),
        ("wrong purpose", "Invalid request signature"),
        ("no purpose route", "purpose must be provided"),
    ],
)
def test_bad_signatures_are_401(http: httpx.Client, alice: User, case: str, expected: str) -> None:
    hotkey = alice.hotkey
    if case == "wrong body":
        response = http.post(
            "/api_keys/",
            content=b'{"name":"x","admin":true}',
            headers=hotkey.signed_body(b'{"name":"y","admin":true}'),
        )
    elif case in ("stale nonce", "future nonce"):
        offset = -700 if case == "stale nonce" else 700
        response = http.get("/users/me", headers=hotkey.headers("me", int(time.time()) + offset))
    elif case == "bad hex":
        response = http.get("/users/me", headers={**hotkey.headers("me"), "X-Chutes-Signature": "zz" * 64})
    elif case == "wrong purpose":
        response = http.get("/users/me", headers=hotkey.headers("chutes"))
    else:
        response = http.get(f"/jobs/{uuid.uuid4()}", headers=hotkey.headers("chutes"))
    assert expected in detail_of(response, 401)


def test_unknown_hotkey_is_401(http: httpx.Client) -> None:
    stranger = Hotkey.new()
    assert "Could not find user with hotkey" in detail_of(
        http.get("/users/me", headers=stranger.headers("me")), 401
    )


def test_an_exact_replay_is_refused(http: httpx.Client, alice: User) -> None:
    headers = alice.hotkey.headers("me")
    assert http.get("/users/me", headers=headers).status_code == 200
    assert "Replayed" in detail_of(http.get("/users/me", headers=headers), 401)


def test_shared_nonce_and_reused_headers_on_another_path_pass(http: httpx.Client, alice: User) -> None:
    nonce = int(time.time())
    # Two requests in the same second share the nonce (deploy's image check, then its POST).
    assert http.get("/users/me", headers=alice.hotkey.headers("me", nonce)).status_code == 200
    assert http.get("/users/me", headers=alice.hotkey.headers("me", nonce)).status_code == 200
    # One header set on two paths (the CLI's warmup fallback does this).
    headers = alice.hotkey.headers("api_keys")
    assert http.get("/api_keys/", headers=headers).status_code == 200
    assert http.get("/api_keys/?limit=5", headers=headers).status_code == 200


def test_partial_signature_headers_are_ignored(http: httpx.Client, alice: User) -> None:
    partial = {k: v for k, v in alice.hotkey.headers("me").items() if k != "X-Chutes-Nonce"}
    assert detail_of(http.get("/users/me", headers=partial), 401) == "Authentication required"
    with_key = http.get("/users/me", headers={**partial, "Authorization": alice.api_key})
    assert with_key.status_code == 200 and with_key.json()["user_id"] == alice.user_id


def test_cli_user_id_header_is_neither_trusted_nor_rejected(
    http: httpx.Client, alice: User, bob: User
) -> None:
    headers = {**alice.hotkey.headers("me"), "X-Chutes-UserID": bob.user_id}
    response = http.get("/users/me", headers=headers)
    assert response.status_code == 200 and response.json()["user_id"] == alice.user_id


def test_registration_signed_by_a_new_hotkey(http: httpx.Client) -> None:
    hotkey = Hotkey.new()
    username = "reg" + uuid.uuid4().hex[:8]
    # The CLI's register uses the stdlib json with spaces, and signs those exact bytes.
    body = json.dumps({"username": username, "coldkey": Hotkey.new().ss58}).encode()
    assert http.get("/ping").status_code == 200
    response = http.post("/users/register?token=replaceme", content=body, headers=hotkey.signed_body(body))
    assert response.status_code == 200, response.text
    registered = response.json()
    assert registered["username"] == username
    assert str(uuid.UUID(registered["user_id"])) == registered["user_id"]
    assert registered["payment_address"].startswith("5") and len(registered["fingerprint"]) == 32
    me = http.get("/users/me", headers=hotkey.headers("me"))
    assert me.status_code == 200 and me.json()["user_id"] == registered["user_id"]

    again = json.dumps({"username": username + "x", "coldkey": ""}).encode()
    assert "already registered" in detail_of(
        http.post("/users/register?token=replaceme", content=again, headers=hotkey.signed_body(again)), 409
    )
    unsigned = http.post("/users/register?token=replaceme", json={"username": "nobody1"})
    assert detail_of(unsigned, 401).startswith("Registration must be signed")


# ---- API keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["{key}", "Bearer {key}", "Basic {key}"])
def test_api_key_forms(http: httpx.Client, alice: User, form: str) -> None:
    response = http.get("/users/me", headers={"Authorization": form.format(key=alice.api_key)})
    assert response.status_code == 200 and response.json()["user_id"] == alice.user_id


def test_malformed_and_wrong_keys_are_401(http: httpx.Client, alice: User) -> None:
    malformed = http.get("/users/me", headers={"Authorization": "Bearer not-a-key"})
    assert detail_of(malformed, 401) == "Missing or invalid authorization header(s)"
    wrong_secret = alice.api_key[:-4] + ("AAAA" if not alice.api_key.endswith("AAAA") else "BBBB")
    assert detail_of(http.get("/users/me", headers={"Authorization": wrong_secret}), 401) == (
        "Invalid token or user not found"
    )


def test_key_lifecycle_and_revocation_within_5_seconds(
    http: httpx.Client, alice: User, suite: RunningSuite
) -> None:
    auth = {"Authorization": alice.api_key}
    created = http.post("/api_keys/", json={"name": "short-lived", "admin": True}, headers=auth)
    assert created.status_code == 200, created.text
    key = created.json()
    assert set(key) >= {"api_key_id", "name", "admin", "scopes", "secret_key", "created_at"}
    new_auth = {"Authorization": f"Basic {key['secret_key']}"}
    assert http.get("/users/me", headers=new_auth).status_code == 200

    listed = http.get("/api_keys/?limit=25&page=0", headers=auth).json()
    mine = {item["api_key_id"]: item for item in listed["items"]}
    assert key["api_key_id"] in mine and "secret_key" not in mine[key["api_key_id"]]
    assert listed["total"] == len(listed["items"]) and {"admin", "scopes", "name"} <= set(
        mine[key["api_key_id"]]
    )
    assert http.get(f"/api_keys/{key['api_key_id']}", headers=auth).json()["name"] == "short-lived"
    duplicate = http.post("/api_keys/", json={"name": "short-lived", "admin": True}, headers=auth)
    assert "short-lived" in detail_of(duplicate, 409)

    deleted = http.delete(f"/api_keys/{key['api_key_id']}", headers=auth)
    assert deleted.json() == {"api_key_id": key["api_key_id"], "deleted": True}
    deadline = time.monotonic() + 5
    while http.get("/users/me", headers=new_auth).status_code == 200:
        assert time.monotonic() < deadline, "a deleted key still worked after 5 s"
        time.sleep(0.25)
    assert http.get("/users/me", headers=new_auth).status_code == 401
    assert key["secret_key"] not in "".join(suite.stderr_lines)  # credentials never reach the logs


def test_scoped_keys_and_their_validation(http: httpx.Client, alice: User) -> None:
    auth = {"Authorization": alice.api_key}
    scoped = http.post(
        "/api_keys/",
        json={
            "name": "scoped-" + uuid.uuid4().hex[:6],
            "admin": False,
            "scopes": [
                {"object_type": "chutes", "action": "invoke"},
                {"action": "invoke", "object_type": "chutes"},
            ],
        },
        headers=auth,
    ).json()
    assert scoped["admin"] is False
    assert scoped["scopes"] == [{"object_type": "chutes", "action": "invoke"}]  # the CLI's duplicate, once
    # A chutes-invoke key may not manage API keys or read the account.
    assert http.get("/users/me", headers={"Authorization": scoped["secret_key"]}).status_code == 401
    bad = http.post(
        "/api_keys/", json={"name": "bad", "admin": False, "scopes": [{"object_type": "users"}]}, headers=auth
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "scopes", 0, "object_type"]


# ---- who may see what ----------------------------------------------------------------------


def test_authorization_matrix_on_a_required_auth_route(
    http: httpx.Client, alice: User, bob: User, suite: RunningSuite
) -> None:
    key_id = http.post(
        "/api_keys/", json={"name": "matrix", "admin": True}, headers={"Authorization": alice.api_key}
    ).json()["api_key_id"]
    scoped = http.post(
        "/api_keys/",
        json={"name": "matrix-scoped", "admin": False, "scopes": [{"object_type": "chutes"}]},
        headers={"Authorization": alice.api_key},
    ).json()["secret_key"]
    path = f"/api_keys/{key_id}"
    cases = {
        "owner by admin key": ({"Authorization": alice.api_key}, 200),
        "owner by hotkey": (alice.hotkey.headers("api_keys"), 200),
        "other user": ({"Authorization": bob.api_key}, 404),
        "anonymous": ({}, 401),
        "owner by scoped key": ({"Authorization": scoped}, 401),
        "forged user id header": ({"x-chutes-user-id": alice.user_id}, 401),
    }
    for case, (headers, status) in cases.items():
        assert http.get(path, headers=headers).status_code == status, case


def test_internal_lookups_are_not_reachable_through_the_gateway(suite: RunningSuite, alice: User) -> None:
    import grpc

    from chutes.identity.v1 import identity_pb2, identity_pb2_grpc

    request = identity_pb2.AuthenticateApiKeyRequest(authorization=alice.api_key)
    with grpc.insecure_channel(suite.gateway.removeprefix("http://")) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            identity_pb2_grpc.IdentityInternalServiceStub(channel).AuthenticateApiKey(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(suite.address_of("identity")) as channel:  # the internal network
        caller = identity_pb2_grpc.IdentityInternalServiceStub(channel).AuthenticateApiKey(
            request, timeout=10
        )
        assert caller.user_id == alice.user_id and caller.auth_method == "api_key"
