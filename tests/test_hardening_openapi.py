"""The REST face's OpenAPI 3.1 document (gateway/openapi.py, issue 16): valid, one operation per
route the gateway transcodes, and served by the gateway itself at /openapi.json with /docs."""

from __future__ import annotations

import re

import httpx
from openapi_spec_validator import validate

from gateway.openapi import document, openapi_path
from gateway.render import load_descriptor, read_contract
from tests.conftest import EchoGateway


def shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_the_document_is_valid_openapi_31_and_matches_the_route_table() -> None:
    descriptors = load_descriptor()
    spec = document(descriptors)
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    documented = {(verb.upper(), shape(path)) for path, item in spec["paths"].items() for verb in item}
    routes = {
        (rpc.http_method, shape(openapi_path(rpc.http_path)))
        for rpc in read_contract(descriptors).rpcs
        if rpc.http_method
    }
    assert documented == routes
    # Every operation documents its errors as {"detail": ...}.
    for item in spec["paths"].values():
        for operation in item.values():
            error = operation["responses"]["4XX"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}
    bare = spec["paths"]["/chutes/boosted"]["get"]["responses"]["200"]["content"]["application/json"]
    assert bare["schema"]["type"] == "array"  # served unwrapped by the Lua normaliser


def test_the_gateway_serves_the_document_and_its_docs(echo_gateway: EchoGateway) -> None:
    served = httpx.get(echo_gateway.url + "/openapi.json", timeout=10)
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.json()["paths"] == document(load_descriptor())["paths"]
    docs = httpx.get(echo_gateway.url + "/docs", timeout=10)
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
    # Only GET: anything else there is the REST API's 404.
    assert httpx.post(echo_gateway.url + "/openapi.json", timeout=10).status_code == 404
