"""Bytes no route can use (invalid UTF-8, NUL) are a 400 with a plain detail on every service,
never a 500 naming protobuf or PostgreSQL (services/kit/decoding.py)."""

from __future__ import annotations

import httpx
import pytest
from google.protobuf import struct_pb2

from chutes.registry.v1 import registry_pb2
from services.kit.decoding import HAS_NUL, NOT_UTF8, has_nul
from tests.conftest import RunningSuite

KEYLESS_PATHS = [
    ("GET", "/chutes/%00"),
    ("GET", "/chutes/code/%00"),
    ("GET", "/images/%00"),
]
AUTHENTICATED_PATHS = [
    ("GET", "/chutes/warmup/%00"),
    ("GET", "/jobs/%00"),
    ("DELETE", "/jobs/%00"),
    ("POST", "/jobs/%00/train"),
]


@pytest.mark.parametrize(("method", "path"), KEYLESS_PATHS)
def test_nul_in_a_path_is_400(suite: RunningSuite, method: str, path: str) -> None:
    response = httpx.request(method, suite.gateway + path, timeout=10)
    assert (response.status_code, response.json()) == (400, {"detail": HAS_NUL})


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED_PATHS)
def test_nul_in_an_authenticated_path_is_400(suite: RunningSuite, method: str, path: str) -> None:
    from tests.test_identity import new_user

    user = new_user(suite)
    headers = {"Authorization": user.api_key}
    body = {} if method == "POST" else None
    response = httpx.request(method, suite.gateway + path, json=body, headers=headers, timeout=10)
    assert (response.status_code, response.json()) == (400, {"detail": HAS_NUL})


@pytest.mark.parametrize("path", ["/chutes/%FF%FE", "/chutes/warmup/%C3%28", "/jobs/%FFx"])
def test_invalid_utf8_in_a_path_is_400(suite: RunningSuite, path: str) -> None:
    from tests.test_identity import new_user

    headers = {"Authorization": new_user(suite).api_key}
    response = httpx.get(suite.gateway + path, headers=headers, timeout=10)
    assert (response.status_code, response.json()) == (400, {"detail": NOT_UTF8})


def test_nul_in_a_json_body_is_400(suite: RunningSuite) -> None:
    from tests.test_identity import new_user

    user = new_user(suite)
    response = httpx.post(
        suite.gateway + "/api_keys/", json={"name": "k\u0000ey", "admin": True},
        headers={"Authorization": user.api_key}, timeout=10,
    )  # fmt: skip
    assert (response.status_code, response.json()) == (400, {"detail": HAS_NUL})


def test_nul_is_found_however_deep() -> None:
    assert has_nul(registry_pb2.GetChuteRequest(chute_id_or_name="a\x00"))
    assert not has_nul(registry_pb2.GetChuteRequest(chute_id_or_name="a"))
    deploy = registry_pb2.DeployChuteRequest()
    deploy.chute.cords.add(path="/x\x00")
    assert has_nul(deploy)
    nested = struct_pb2.Struct()
    nested.update({"x": {"y": ["fine", "n\x00"]}})
    assert has_nul(nested)
    keyed = registry_pb2.Chute()
    keyed.compute_multiplier_factors["k\x00"] = 1.0
    assert has_nul(keyed)
