"""Bounded, seeded fuzzing through the real gateway (issue 16, "keep them fixed"): every REST
operation of the OpenAPI document, with any bytes in its path variables, query string, headers
and body, answers as documented: success, or a 4xx `{"detail": ...}` naming nothing internal;
never a 5xx but 501 (not built yet). No traceback is logged for any of it."""

from __future__ import annotations

import json
import random
import re
import time
import urllib.parse
from typing import Any

import httpx
import pytest

from gateway.openapi import document
from gateway.render import load_descriptor
from tests.conftest import RunningSuite

SEED = 16
CASES_PER_OPERATION = 12
INTERNAL = re.compile(r"upstream|envoy|reset reason|proto|googleapis|TYPE_|grpc|Traceback|Error:", re.I)

NASTY_TEXT = [
    "\x00", "%00", "%FF%FE", "%C3%28", "\u202e", "é", "😀", "..", "../..", "%2F", "a" * 3000, "-1",
    "1e309", "NaN", "true", "null", "[]", "{}", "0x10", " ", "%20", "%", "%G0", "\\", '"', "'", "<script>",
]  # fmt: skip


def nasty(rng: random.Random) -> str:
    """A path or query value: raw percent-escapes kept (so bytes that are not UTF-8 get through)."""
    choice = rng.random()
    if choice < 0.5:  # characters a URL cannot hold raw are escaped; escapes already there stay
        return urllib.parse.quote(rng.choice(NASTY_TEXT), safe="%/:@!$&'()*+,;=")
    if choice < 0.8:
        return "".join(f"%{rng.randrange(256):02X}" for _ in range(rng.randrange(1, 8)))
    return urllib.parse.quote(str(rng.randrange(-(10**20), 10**20)))


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "object"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return rng.choice([*NASTY_TEXT, "x", "chutes", ""])
    if kind == "int":
        return rng.choice([0, -1, 2**31, 2**63, 10**30, 7])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e-9])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["name", "chute_id", "x", "scopes", "node_selector", "\x00"]
    return {rng.choice(keys): json_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def body_of(rng: random.Random, schema_fields: list[str]) -> bytes:
    choice = rng.random()
    if choice < 0.15:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))  # not JSON at all
    if choice < 0.3:
        return json.dumps(json_value(rng)).encode()
    document_ = {f: json_value(rng) for f in schema_fields if rng.random() < 0.6}
    return json.dumps(document_).encode()


def requests(spec: dict[str, Any], rng: random.Random) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    out = []
    schemas = spec["components"]["schemas"]
    for template, item in spec["paths"].items():
        for verb, operation in item.items():
            query_names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            body_fields: list[str] = []
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content:
                schema = content["schema"]
                if "$ref" in schema:
                    schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
                body_fields = list(schema.get("properties", {}))
            for _ in range(CASES_PER_OPERATION):
                path = re.sub(r"\{[^}]*\}", lambda _: nasty(rng), template)
                names = [*query_names, "limit", "page", "unknown", "%FF"]
                query = "&".join(f"{rng.choice(names)}={nasty(rng)}" for _ in range(rng.randrange(4)))
                headers = {}
                if rng.random() < 0.2:
                    headers["x-chutes-nonce"] = nasty(rng)
                    headers["x-chutes-hotkey"] = nasty(rng)
                    headers["x-chutes-signature"] = nasty(rng)
                body = body_of(rng, body_fields) if verb in ("post", "put", "patch") else None
                out.append((verb.upper(), path + ("?" + query if query else ""), body, headers))
    return out


@pytest.mark.parametrize("authenticated", [False, True])
def test_any_bytes_anywhere_is_success_or_a_clean_4xx(suite: RunningSuite, authenticated: bool) -> None:
    from tests.test_identity import new_user

    rng = random.Random(SEED + authenticated)
    spec = document(load_descriptor())
    auth = {"Authorization": new_user(suite).api_key} if authenticated else {}
    logged = len(suite.stderr_lines)
    failures = []
    with httpx.Client(base_url=suite.gateway, timeout=30) as http:
        for method, target, body, headers in requests(spec, rng):
            request = http.build_request(
                method, target, content=body, headers={**auth, **headers, "content-type": "application/json"}
            )
            request.url = httpx.URL(suite.gateway + target)  # keep the raw escapes as sent
            response = http.send(request)
            status = response.status_code
            if status < 400:
                continue
            problem = None
            if status >= 500 and status != 501:
                problem = "5xx"
            else:
                try:
                    detail = response.json()["detail"]
                    if INTERNAL.search(json.dumps(detail)):
                        problem = "names internals"
                except (ValueError, KeyError, TypeError):
                    problem = "not {detail} JSON"
            if problem:
                failures.append((problem, method, target[:120], status, response.text[:200]))
    time.sleep(0.3)
    tracebacks = [line for line in suite.stderr_lines[logged:] if "Traceback" in line]
    assert not failures, failures[:10]
    assert not tracebacks
