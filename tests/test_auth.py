"""The kit's caller resolution: caching, revocation, optional vs required routes, identity down."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.kit import auth
from services.kit.auth import Authenticator
from services.kit.caller import Caller, MalformedCredential, Scope
from services.kit.errors import Unauthenticated, Unavailable
from services.kit.identity_client import IdentityClient
from suite.postgres import free_port

ALICE = Caller(user_id="u-alice", username="alice", auth_method="api_key")


class CountingLookup:
    """A CallerLookup with one known key, counting how often it is asked."""

    def __init__(self) -> None:
        self.asked = 0
        self.valid = {"good-key": ALICE}

    async def by_api_key(self, authorization: str) -> Caller:
        self.asked += 1
        if authorization == "junk":
            raise MalformedCredential("Missing or invalid authorization header(s)")
        if authorization in self.valid:
            return self.valid[authorization]
        raise Unauthenticated("Invalid token or user not found")

    async def by_user_id(self, user_id: str) -> Caller:
        self.asked += 1
        return Caller(user_id=user_id, username="hk")


def resolve(authenticator: Authenticator, metadata: dict[str, str]) -> tuple[Caller | None, Exception | None]:
    async def run() -> tuple[Caller | None, Exception | None]:
        await authenticator.resolve(metadata)
        try:
            return auth.optional_caller(), None
        except Exception as error:
            return None, error

    return asyncio.run(run())


def test_a_key_is_asked_about_once_per_cache_period(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = CountingLookup()
    authenticator = Authenticator(lookup)
    for _ in range(5):
        assert resolve(authenticator, {"authorization": "good-key"})[0] == ALICE
    assert lookup.asked == 1
    del lookup.valid["good-key"]  # revoked
    monkeypatch.setattr(auth.time, "monotonic", lambda: 10**9)  # the cache period has passed
    assert resolve(authenticator, {"authorization": "good-key"}) == (None, None)
    assert auth.CACHE_SECONDS < 5


def test_optional_routes_treat_unknown_keys_as_anonymous_but_not_malformed_ones() -> None:
    authenticator = Authenticator(CountingLookup())
    assert resolve(authenticator, {}) == (None, None)
    assert resolve(authenticator, {"authorization": "cpk_unknown"}) == (None, None)
    caller, error = resolve(authenticator, {"authorization": "junk"})
    assert caller is None and isinstance(error, MalformedCredential)


def test_gateway_verified_user_wins_over_an_api_key() -> None:
    authenticator = Authenticator(CountingLookup())
    caller, _ = resolve(
        authenticator,
        {"x-chutes-user-id": "u-hotkey", "x-chutes-auth-method": "hotkey", "authorization": "good-key"},
    )
    assert caller is not None and (caller.user_id, caller.auth_method) == ("u-hotkey", "hotkey")


def test_scoped_keys_follow_the_rest_request() -> None:
    scoped = Caller(user_id="u", username="u", admin=False, scopes=(Scope("chutes", None, "read"),))
    lookup = CountingLookup()
    lookup.valid["scoped"] = scoped
    authenticator = Authenticator(lookup)

    def seen(method: str, path: str) -> Caller | None:
        return resolve(
            authenticator,
            {"authorization": "scoped", "x-envoy-original-method": method, "x-envoy-original-path": path},
        )[0]

    assert seen("GET", "/chutes/abc") == scoped
    assert seen("GET", "/chutes/?limit=5") == scoped
    assert seen("DELETE", "/chutes/abc") is None
    assert seen("GET", "/images/abc") is None
    assert seen("", "") is None  # native gRPC: no REST request to judge, so no scoped access
    assert auth.scope_allows((Scope("chutes", "abc", "invoke"),), "POST", "/chutes/abc/generate")
    assert not auth.scope_allows((Scope("chutes", "abc", "invoke"),), "POST", "/chutes/xyz/generate")


def test_identity_down_is_503_not_a_pass() -> None:
    async def run() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as nobody_listening:
            await Authenticator(IdentityClient(nobody_listening)).resolve({"authorization": "cpk_whatever"})
        with pytest.raises(Unavailable):
            auth.optional_caller()
        with pytest.raises(Unavailable):
            auth.require_caller()

    asyncio.run(run())
