"""Who may call a chute at its host: the registry's invocation check (services/registry/invocations.py)
behind the gateway's second ext_authz filter (gateway/render.py).

Two layers:
- the gateway alone, with a scripted check in-process (the kit's authz_http server) and the
  control plane of test_invocation_routing: what the gateway does with the check's answers (JSON
  denials as the check wrote them, 503 when it cannot ask, credentials kept from instances, REST
  routes never checked);
- through `chutes-suite up`, with a deployed chute and a real `chutes run` instance (as
  test_chute_hosts): anonymous 401, the owner by key and by hotkey signature, another user 404
  until shared and again within 5 s of the unshare, a deleted key 401 within 5 s, scoped keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.render import AUTHZ_TIMEOUT, INVOCATION_AUTHZ, INVOCATION_VERDICTS, render, write_config
from services.kit import authz_http
from services.kit.auth import CACHE_SECONDS
from services.kit.authz_http import AuthzRequest, Verdict
from services.kit.headers import VERDICT_REUSE_HEADER
from services.kit.settings import SERVICE_NAMES
from services.registry.invocations import DECISION_SECONDS, EDGE_REUSE_SECONDS
from services.registry.xds import ChuteRoute, RoutingTable
from tests.conftest import RunningSuite, _Loop, free_port, start_envoy
from tests.test_chute_hosts import echo_instance, sql  # noqa: F401 (fixture)
from tests.test_chute_run import ChuteProcess
from tests.test_identity import User
from tests.test_invocation_routing import (  # noqa: F401 (fixtures)
    ECHO_ID,
    Upstream,
    _serve,
    app_dir,
    loop,
    upstreams,
)
from tests.test_registry import deploy_body, deployed, friend, http, image, key, owner  # noqa: F401

# ---- the gateway with a scripted check ---------------------------------------------------------

AUTHZ_SECONDS = float(AUTHZ_TIMEOUT.rstrip("s"))
REUSE_MS = 1500


@dataclass
class ScriptedCheck:
    """Answers as the registry would, by the credential: `Bearer allow` passes as user `u-1`;
    `Bearer reusable` passes as `u-2` and lets the gateway reuse that for REUSE_MS."""

    seen: list[AuthzRequest] = field(default_factory=list)

    async def __call__(self, request: AuthzRequest) -> Verdict:
        self.seen.append(request)
        authorization = request.headers.get("authorization", "")
        if authorization == "Bearer allow":
            return Verdict(upstream_headers={"x-chutes-user-id": "u-1"})
        if authorization == "Bearer reusable":
            return Verdict(upstream_headers={"x-chutes-user-id": "u-2", VERDICT_REUSE_HEADER: str(REUSE_MS)})
        if authorization == "Bearer hidden":
            return Verdict(denied="No matching chute found!", status=404)
        if authorization == "Bearer broken":
            raise RuntimeError("the check itself failed")
        if authorization == "Bearer slow":
            await asyncio.sleep(AUTHZ_SECONDS + 1)
            return Verdict(upstream_headers={"x-chutes-user-id": "u-1"})
        return Verdict(denied="Authentication required")


@dataclass
class CheckedGateway:
    url: str
    check: ScriptedCheck


@pytest.fixture(scope="module")
def checked_gateway(loop: _Loop, upstreams: dict[str, Upstream]) -> Iterator[CheckedGateway]:  # noqa: F811
    table = RoutingTable("localhost")
    table.load([ChuteRoute(ECHO_ID, "echo", 4, (upstreams["a"].endpoint("echo-a"),))])
    table.mark_ready()
    server, cp_port = loop.run(_serve(table, "127.0.0.1:0"))  # type: ignore[misc]
    cp = f"127.0.0.1:{cp_port}"
    check = ScriptedCheck()
    check_port = free_port()

    async def serve_check() -> asyncio.Server:
        return await authz_http.serve(check, "127.0.0.1", check_port)

    async def close_check(check_server: asyncio.Server) -> None:
        check_server.close()

    check_server: asyncio.Server = loop.run(serve_check())  # type: ignore[assignment]
    running = CheckedGateway("", check)
    with tempfile.TemporaryDirectory(prefix="chutes-test-invoke-auth-") as tmp:
        port = free_port()
        addresses = {name: f"127.0.0.1:{free_port()}" for name in SERVICE_NAMES}
        addresses["registry"] = cp
        config = write_config(
            Path(tmp) / "envoy.json",
            addresses,
            authz_address=f"127.0.0.1:{free_port()}",  # nobody: signed requests get 503
            port=port,
            xds_address=cp,
            chute_domain="localhost",
            invocation_authz_address=f"127.0.0.1:{check_port}",
        )
        envoy = start_envoy(config, Path(tmp) / "admin")
        running.url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 10
            while _echo(running, {"Authorization": "Bearer allow"}).status_code != 200:
                assert time.monotonic() < deadline, "the echo chute never became routable"
                time.sleep(0.05)
            yield running
        finally:
            envoy.terminate()
            envoy.wait(10)
            loop.run(close_check(check_server))
            loop.run(server.stop(0))


def _echo(gateway: CheckedGateway, headers: dict[str, str], host: str = "echo.localhost") -> httpx.Response:
    return httpx.get(f"{gateway.url}/hello", headers={"Host": host, **headers}, timeout=10)


def assert_json(response: httpx.Response, status: int, detail: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": detail}
    assert response.headers["x-chutes-invocationid"]


def test_render_without_invocation_checks_is_unchanged() -> None:
    base: dict[str, Any] = {
        "authz_address": "127.0.0.1:1",
        "port": 8000,
        "xds_address": "127.0.0.1:2",
    }
    addresses = {name: f"127.0.0.1:{3 + i}" for i, name in enumerate(SERVICE_NAMES)}
    plain = json.dumps(render(addresses, **base))
    assert INVOCATION_AUTHZ not in plain
    assert plain == json.dumps(render(addresses, **base, invocation_authz_address=None))
    checked = render(addresses, **base, invocation_authz_address="127.0.0.1:9")
    manager = checked["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f["name"] for f in manager["http_filters"]]
    # After identity's signature check (the user id it sets is part of a verdict's key), the
    # verdict reuse right before the check it stands in for.
    identity = filters.index("envoy.filters.http.ext_authz")
    assert filters[identity + 1 : identity + 3] == [INVOCATION_VERDICTS, INVOCATION_AUTHZ]
    [invocation_filter] = [f for f in manager["http_filters"] if f["name"] == INVOCATION_AUTHZ]
    assert invocation_filter["typed_config"]["failure_mode_allow"] is False
    chute_vhost, rest_vhost = manager["route_config"]["virtual_hosts"]
    for name in (INVOCATION_VERDICTS, INVOCATION_AUTHZ):
        assert [f["disabled"] for f in manager["http_filters"] if f["name"] == name] == [True]
        assert name in chute_vhost["routes"][-1]["typed_per_filter_config"]
        assert name not in json.dumps(rest_vhost)


def test_allowed_call_reaches_the_instance_with_the_caller_only(checked_gateway: CheckedGateway) -> None:
    before = len(checked_gateway.check.seen)
    response = _echo(
        checked_gateway,
        {
            "Authorization": "Bearer allow",
            "X-API-Key": "cpk_secret",
            "X-Chutes-User-Id": "someone-else",  # a client's copy never reaches the check
            "X-Chutes-Hotkey": "5F",  # a partial signature set: no identity check, still dropped
            "X-Chutes-Nonce": "1",
        },
    )
    assert response.status_code == 200, response.text
    seen = response.json()["headers"]
    assert "x-chutes-user-id" in seen
    assert not {"authorization", "x-api-key", "x-chutes-hotkey", "x-chutes-nonce"} & set(seen)
    [check] = checked_gateway.check.seen[before:]
    assert check.headers["host"] == "echo.localhost"
    assert check.headers["authorization"] == "Bearer allow"
    assert "x-chutes-user-id" not in check.headers and "x-api-key" not in check.headers
    assert check.body == b""  # invocation bodies stream to the instance, never to the check


def test_denials_are_the_checks_json(checked_gateway: CheckedGateway) -> None:
    assert_json(_echo(checked_gateway, {}), 401, "Authentication required")
    assert_json(_echo(checked_gateway, {"Authorization": "Bearer hidden"}), 404, "No matching chute found!")
    # Checked before routing: an unknown host answers the same to whoever may not call it.
    assert_json(_echo(checked_gateway, {}, host="nope.localhost"), 401, "Authentication required")
    allowed_unknown = _echo(checked_gateway, {"Authorization": "Bearer allow"}, host="nope.localhost")
    assert_json(allowed_unknown, 404, "No matching chute found!")


def test_a_check_that_cannot_be_made_is_503_never_a_pass(checked_gateway: CheckedGateway) -> None:
    assert_json(_echo(checked_gateway, {"Authorization": "Bearer broken"}), 503, "Service Unavailable")
    started = time.monotonic()
    assert_json(_echo(checked_gateway, {"Authorization": "Bearer slow"}), 503, "Service Unavailable")
    assert time.monotonic() - started < 5  # the gateway gave up waiting (AUTHZ_TIMEOUT)


def test_an_allow_is_reused_only_as_long_as_the_check_says(checked_gateway: CheckedGateway) -> None:
    with httpx.Client(base_url=checked_gateway.url, timeout=10) as client:  # one Envoy worker

        def call(authorization: str, host: str = "echo.localhost") -> httpx.Response:
            return client.get("/hello", headers={"Host": host, "Authorization": authorization})

        def checks() -> list[str]:
            return [seen.headers.get("authorization", "") for seen in checked_gateway.check.seen]

        before = len(checks())
        first = call("Bearer reusable")
        started = time.monotonic()
        assert first.status_code == 200, first.text
        for _ in range(5):
            again = call("Bearer reusable")
            assert again.status_code == 200, again.text
            # The instance still gets the caller (never the reuse header, nor the credential).
            seen = again.json()["headers"]
            assert "x-chutes-user-id" in seen
            assert VERDICT_REUSE_HEADER not in seen and "authorization" not in seen
        reused_for = time.monotonic() - started
        asked = checks()[before:]
        assert asked == ["Bearer reusable"] or reused_for > REUSE_MS / 1000, asked
        # Reuse is per credential and host: another host is asked about, so is every denial.
        assert_json(call("Bearer reusable", host="nope.localhost"), 404, "No matching chute found!")
        assert [s.headers["host"] for s in checked_gateway.check.seen[before:]][-1] == "nope.localhost"
        for _ in range(2):
            assert_json(call("Bearer nobody"), 401, "Authentication required")
        assert checks()[before:].count("Bearer nobody") == 2
        time.sleep(REUSE_MS / 1000 + 0.2)
        assert call("Bearer reusable").status_code == 200
        assert checks()[before:].count("Bearer reusable") >= 2  # asked again once it ran out


def test_edge_reuse_keeps_revocation_within_5_seconds() -> None:
    # A verdict is given only while the caller's cached answer holds; the gateway adds its reuse.
    assert CACHE_SECONDS + EDGE_REUSE_SECONDS <= 5
    assert DECISION_SECONDS + EDGE_REUSE_SECONDS <= 5


def test_rest_routes_never_ask_the_invocation_check(checked_gateway: CheckedGateway) -> None:
    before = len(checked_gateway.check.seen)
    for path in ("/chutes/", "/users/me", "/nope"):
        httpx.get(f"{checked_gateway.url}{path}", headers={"Authorization": "Bearer allow"}, timeout=10)
    assert len(checked_gateway.check.seen) == before


# ---- through the suite -------------------------------------------------------------------------


@dataclass
class Hosted:
    suite: RunningSuite
    chute: dict[str, Any]
    host: str

    def call(self, headers: dict[str, str] | None = None, body: bytes = b'{"text": "hi"}') -> httpx.Response:
        return httpx.post(
            f"{self.suite.gateway}/echo",
            content=body,
            headers={"Host": self.host, "Content-Type": "application/json", **(headers or {})},
            timeout=10,
        )


def until(
    probe: Callable[[], httpx.Response], status: int, within: float = 5.0
) -> tuple[httpx.Response, float]:
    """Poll until `probe()` answers `status`; the answer and how long it took (fails after `within`)."""
    start = time.monotonic()
    while True:
        response = probe()
        elapsed = time.monotonic() - start
        if response.status_code == status:
            return response, elapsed
        assert elapsed < within, f"still {response.status_code} after {within} s: {response.text}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def hosted(
    suite: RunningSuite,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    image: str,  # noqa: F811
    database_url: str,
    echo_instance: ChuteProcess,  # noqa: F811
) -> Hosted:
    chute = deployed(http, owner, deploy_body("authed-" + uuid.uuid4().hex[:6], image))
    port = int(echo_instance.url.rsplit(":", 1)[1])
    sql(
        database_url,
        "INSERT INTO registry.instances (instance_id, chute_id, version, host, port, active, verified)"
        " VALUES ($1, $2, $3, '127.0.0.1', $4, true, true)",
        str(uuid.uuid4()),
        chute["chute_id"],
        chute["version"],
        port,
    )
    running = Hosted(suite, chute, f"{chute['slug']}.localhost")
    until(lambda: running.call(key(owner)), 200)
    return running


def test_anonymous_calls_are_401(hosted: Hosted, owner: User) -> None:  # noqa: F811
    assert_json(hosted.call(), 401, "Authentication required")
    # The gateway removes a client's own identity headers: naming the owner proves nothing.
    spoofed = hosted.call({"X-Chutes-User-Id": owner.user_id, "X-Chutes-UserID": owner.user_id})
    assert_json(spoofed, 401, "Authentication required")
    malformed = hosted.call({"Authorization": "cpk_nonsense"})
    assert_json(malformed, 401, "Missing or invalid authorization header(s)")
    wrong = owner.api_key[:-1] + ("0" if owner.api_key[-1] != "0" else "1")
    assert_json(hosted.call({"Authorization": wrong}), 401, "Invalid token or user not found")


def test_the_owner_calls_with_a_key_or_a_signature(hosted: Hosted, owner: User) -> None:  # noqa: F811
    for auth in (key(owner), {"Authorization": owner.api_key}, {"Authorization": f"Bearer {owner.api_key}"}):
        answered = hosted.call(auth)
        assert answered.status_code == 200, answered.text
        assert answered.json()["echo"] == {"text": "hi"}
    body = b'{"text": "signed"}'
    signed = hosted.call(owner.hotkey.headers(hashlib.sha256(body).hexdigest()), body)
    assert signed.status_code == 200, signed.text
    assert signed.json()["echo"] == {"text": "signed"}
    # A signature over another body is identity's 401, before the registry is asked.
    forged = hosted.call(owner.hotkey.headers(hashlib.sha256(b"{}").hexdigest()), body)
    assert forged.status_code == 401, forged.text
    assert forged.headers["content-type"] == "application/json" and "detail" in forged.json()


def test_others_see_a_private_chute_only_while_it_is_shared(
    hosted: Hosted,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    friend: User,  # noqa: F811
) -> None:
    assert_json(hosted.call(key(friend)), 404, "No matching chute found!")
    share = {"chute_id_or_name": hosted.chute["chute_id"], "user_id_or_name": friend.user_id}
    assert http.post("/chutes/share", json=share, headers=key(owner)).status_code == 200
    answered, _ = until(lambda: hosted.call(key(friend)), 200)
    assert answered.json()["echo"] == {"text": "hi"}
    assert http.post("/chutes/unshare", json=share, headers=key(owner)).status_code == 200
    hidden, took = until(lambda: hosted.call(key(friend)), 404)
    assert hidden.json() == {"detail": "No matching chute found!"}
    print(f"unshare took effect after {took:.2f} s")


def test_a_deleted_key_stops_working_within_5_seconds(
    hosted: Hosted,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
) -> None:
    created = http.post(
        "/api_keys/", json={"name": "inv-" + uuid.uuid4().hex[:6], "admin": True}, headers=key(owner)
    )
    assert created.status_code == 200, created.text
    made = created.json()
    auth = {"Authorization": f"Bearer {made['secret_key']}"}
    assert hosted.call(auth).status_code == 200
    deleted = http.delete(f"/api_keys/{made['api_key_id']}", headers=key(owner))
    assert deleted.status_code == 200, deleted.text
    refused, took = until(lambda: hosted.call(auth), 401)
    assert refused.json() == {"detail": "Invalid token or user not found"}
    print(f"key deletion took effect after {took:.2f} s")
    assert made["secret_key"] not in "".join(hosted.suite.stderr_lines)


def test_scoped_keys_reach_only_their_chutes(
    hosted: Hosted,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
) -> None:
    def scoped(*scopes: dict[str, str]) -> dict[str, str]:
        body = {"name": "sc-" + uuid.uuid4().hex[:6], "admin": False, "scopes": list(scopes)}
        created = http.post("/api_keys/", json=body, headers=key(owner))
        assert created.status_code == 200, created.text
        return {"Authorization": f"Bearer {created.json()['secret_key']}"}

    chute_id = hosted.chute["chute_id"]
    assert hosted.call(
        scoped({"object_type": "chutes", "object_id": chute_id, "action": "invoke"})
    ).is_success
    assert hosted.call(scoped({"object_type": "invocations"})).is_success
    other = str(uuid.uuid4())
    assert_json(
        hosted.call(scoped({"object_type": "chutes", "object_id": other, "action": "invoke"})),
        401,
        "Invalid token or user not found",
    )
    assert hosted.call(scoped({"object_type": "images"})).status_code == 401
