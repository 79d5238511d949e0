"""Render the Envoy configuration of the gateway from the descriptor set and service addresses.

Everything route-specific is derived from the contract, so adding an RPC to a proto and running
codegen is all the gateway needs:
- one cluster per service, found by its package `chutes.<name>.v1`; `*InternalService` services
  (service-to-service lookups) get no route at all;
- native gRPC is routed by service prefix, REST by the transcoder from the `google.api.http` rules;
- an RPC whose response message is exactly `repeated X items = 1` is served to REST clients as a
  bare JSON array (route metadata read by the Lua normaliser);
- streaming RPCs (SSE, uploads, downloads) get no route timeout;
- boolean query parameters and body field names are handed to Lua for FastAPI-shaped parsing
  and errors.

Filter order (see notes/gateway-facts.md section 0): Lua normaliser, header_mutation (strips
client-sent identity headers), ext_authz (hotkey signatures, checked by identity on the raw
body), grpc_json_transcoder, router.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from services.kit.headers import CALLER_HEADERS
from services.kit.server import MAX_REQUEST_MESSAGE_BYTES

GATEWAY_DIR = Path(__file__).resolve().parent
DESCRIPTOR_PATH = GATEWAY_DIR / "chutes.binpb"
LUA_PATH = GATEWAY_DIR / "normalise.lua"

#: Largest JSON request body a REST client may send (deploy bodies carry code and readme); larger
#: ones get 413. Streamed bodies (job file uploads) are not limited by it.
MAX_JSON_BODY_BYTES = MAX_REQUEST_MESSAGE_BYTES // 2
#: Upstream timeout of unary calls; streaming calls have none.
UNARY_TIMEOUT = "60s"
#: Path of the benchmark-only direct response (Envoy's own ceiling).
BENCH_DIRECT_PATH = "/__bench/direct"

#: Services named `*InternalService` are for the suite's own services and are never routed.
INTERNAL_SUFFIX = "InternalService"

_LUA = "envoy.filters.http.lua"
_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
_EXT_AUTHZ = "envoy.filters.http.ext_authz"
#: The request headers of a hotkey signature; ext_authz runs only when all three are present.
SIGNATURE_HEADERS = ("x-chutes-hotkey", "x-chutes-nonce", "x-chutes-signature")
#: How long the gateway waits for identity to check a signature before answering 503.
AUTHZ_TIMEOUT = "2s"
#: The cluster of identity's signature-check endpoint (HTTP/1.1).
AUTHZ_CLUSTER = "identity_authz"


@dataclass(frozen=True)
class Rpc:
    service: str  # short service name: "registry"
    grpc_path: str  # "/chutes.registry.v1.RegistryService/GetChute"
    http_method: str  # "GET" ("" when the RPC has no REST binding)
    http_path: str  # "/chutes/{chute_id_or_name=**}"
    streaming: bool
    client_streaming: bool
    bare_array: bool


@dataclass
class Contract:
    """What the gateway needs to know about the protos."""

    grpc_services: dict[str, str] = field(default_factory=dict)  # full name -> short name
    rpcs: list[Rpc] = field(default_factory=list)
    bool_query_params: set[str] = field(default_factory=set)
    body_fields: set[str] = field(default_factory=set)

    def streamed_paths(self, escape: str = "\\") -> list[str]:
        """Patterns of the REST paths of client-streaming RPCs (uploads: their bodies are neither
        limited nor buffered), as RE2 regexes, or Lua patterns with `escape="%"`."""
        templates = {r.http_path for r in self.rpcs if r.client_streaming and r.http_path}
        return sorted(_path_pattern(t, escape) for t in templates)


def _path_pattern(template: str, escape: str) -> str:
    """`/jobs/{job_id}/upload` as `^/jobs/[^/]+/upload/?$` (the same in RE2 and Lua)."""
    out = []
    for segment in template.strip("/").split("/"):
        if segment.startswith("{"):
            out.append(".+" if segment.endswith("=**}") else "[^/]+")
        else:
            out.append("".join(escape + c if not c.isalnum() and c != "_" else c for c in segment))
    return "^/" + "/".join(out) + "/?$"


def load_descriptor(path: Path = DESCRIPTOR_PATH) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def read_contract(descriptors: descriptor_pb2.FileDescriptorSet) -> Contract:
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    for file in descriptors.file:
        for message in file.message_type:
            messages[f".{file.package}.{message.name}"] = message

    contract = Contract()
    for file in descriptors.file:
        package = file.package.split(".")
        if len(package) != 3 or package[0] != "chutes":
            continue
        short = package[1]
        for service in file.service:
            if service.name.endswith(INTERNAL_SUFFIX):
                continue  # service-to-service only: no route, so gRPC clients get UNIMPLEMENTED
            full = f"{file.package}.{service.name}"
            contract.grpc_services[full] = short
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                http_method, http_path = (
                    ("", "") if verb in (None, "custom") else (verb.upper(), getattr(rule, verb))
                )
                output = messages.get(method.output_type)
                bare = (
                    output is not None
                    and len(output.field) == 1
                    and output.field[0].name == "items"
                    and output.field[0].label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                )
                contract.rpcs.append(
                    Rpc(
                        service=short,
                        grpc_path=f"/{full}/{method.name}",
                        http_method=http_method,
                        http_path=http_path,
                        streaming=method.client_streaming or method.server_streaming,
                        client_streaming=method.client_streaming,
                        bare_array=bare,
                    )
                )
                if http_method and rule.body != "*":
                    if rule.body:
                        contract.body_fields.add(rule.body)
                    request = messages[method.input_type]
                    contract.bool_query_params.update(
                        f.name
                        for f in request.field
                        if f.type == descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
                    )
    return contract


def _typed(kind: str, **config: Any) -> dict[str, Any]:
    """An Envoy typed config: `kind` is the type name after `envoy.`."""
    return {"@type": f"type.googleapis.com/envoy.{kind}", **config}


def _cluster(name: str, address: str, *, http2: bool = True) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        discovery = "STATIC"
    except ValueError:
        discovery = "STRICT_DNS"  # a service name, e.g. in Kubernetes
    return {
        "name": name,
        "type": discovery,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}}
                if http2
                else {"http_protocol_options": {}},
            )
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": int(port)}}
                            }
                        }
                    ]
                }
            ],
        },
    }


def _routes(contract: Contract, bench: bool) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    if bench:
        disabled = _typed("config.route.v3.FilterConfig", disabled=True)
        routes.append(
            {
                "match": {"path": BENCH_DIRECT_PATH},
                "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}'}},
                "typed_per_filter_config": {_LUA: disabled, _TRANSCODER: disabled},
            }
        )
    # Exact routes first: they carry what differs from the service's prefix route.
    for rpc in contract.rpcs:
        if not (rpc.bare_array or rpc.streaming):
            continue
        route: dict[str, Any] = {
            "match": {"path": rpc.grpc_path},
            "route": {"cluster": rpc.service, "timeout": "0s" if rpc.streaming else UNARY_TIMEOUT},
        }
        if rpc.bare_array:
            # Read by Lua on the response, where the route is the one re-matched on the gRPC path.
            route["metadata"] = {"filter_metadata": {_LUA: {"unwrap": "items"}}}
        routes.append(route)
    for full, short in sorted(contract.grpc_services.items()):
        routes.append(
            {"match": {"prefix": f"/{full}/"}, "route": {"cluster": short, "timeout": UNARY_TIMEOUT}}
        )
    # REST paths. The filters before the transcoder (ext_authz among them) act only on a request
    # that has a route, matched on its REST path; after transcoding the router re-matches on the
    # gRPC path, so these routes' own targets serve only requests that match nothing else.
    for pattern in contract.streamed_paths():
        # Signed uploads are checked on their headers: their bodies stream, unbuffered.
        routes.append(
            {
                "match": {"safe_regex": {"regex": pattern}},
                "direct_response": {"status": 404},
                "typed_per_filter_config": {
                    _EXT_AUTHZ: _typed(
                        "extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                        check_settings={"disable_request_body_buffering": True},
                    )
                },
            }
        )
    # gRPC clients read a 404 as UNIMPLEMENTED.
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    return routes


def _header_absent(name: str) -> dict[str, Any]:
    return {
        "not_matcher": {
            "single_predicate": {
                "input": {
                    "name": name,
                    "typed_config": _typed("type.matcher.v3.HttpRequestHeaderMatchInput", header_name=name),
                },
                "value_match": {"safe_regex": {"google_re2": {}, "regex": ".*"}},
            }
        }
    }


def _ext_authz() -> dict[str, Any]:
    """Hotkey signatures are verified at the edge by identity, which sees the client's exact body.

    Only requests with the whole signature header set reach it: anonymous and API-key requests
    skip the check (keys are verified inside the services), and a partial set is ignored, as the
    real API ignores it. Identity down or slow means 503, never a pass. HTTP mode, not gRPC: it
    costs identity a third of the CPU per check (services/identity/authz_http.py).
    """

    def exactly(names: tuple[str, ...]) -> dict[str, Any]:
        return {"patterns": [{"exact": name} for name in names]}

    check = _typed(
        "extensions.filters.http.ext_authz.v3.ExtAuthz",
        http_service={
            "server_uri": {
                "uri": f"http://{AUTHZ_CLUSTER}",
                "cluster": AUTHZ_CLUSTER,
                "timeout": AUTHZ_TIMEOUT,
            },
            "authorization_response": {
                # The verified identity goes to the service, replacing anything the client sent.
                "allowed_upstream_headers": exactly(CALLER_HEADERS[:3]),
                "allowed_client_headers": exactly(("content-type",)),
            },
        },
        # Besides method, path and content-length, which Envoy always sends.
        allowed_headers=exactly(SIGNATURE_HEADERS),
        failure_mode_allow=False,
        status_on_error={"code": "ServiceUnavailable"},
        with_request_body={"max_request_bytes": MAX_JSON_BODY_BYTES, "allow_partial_message": False},
    )
    skip = {
        "action": {
            "name": "skip",
            "typed_config": _typed("extensions.filters.common.matcher.action.v3.SkipFilter"),
        }
    }
    return {
        "name": _EXT_AUTHZ,
        "typed_config": _typed(
            "extensions.common.matching.v3.ExtensionWithMatcher",
            xds_matcher={
                "matcher_list": {
                    "matchers": [
                        {
                            "predicate": {
                                "or_matcher": {"predicate": [_header_absent(h) for h in SIGNATURE_HEADERS]}
                            },
                            "on_match": skip,
                        }
                    ]
                }
            },
            extension_config={"name": _EXT_AUTHZ, "typed_config": check},
        ),
    }


def _lua_source(contract: Contract) -> str:
    def lua_set(names: set[str]) -> str:
        return "{" + ", ".join(f"[{json.dumps(n)}] = true" for n in sorted(names)) + "}"

    prelude = (
        "-- Rendered from the descriptor by gateway/render.py.\n"
        f"BOOL_QUERY_PARAMS = {lua_set(contract.bool_query_params)}\n"
        f"BODY_FIELDS = {lua_set(contract.body_fields)}\n"
        f"STREAMED_PATHS = {{{', '.join(json.dumps(p) for p in contract.streamed_paths('%'))}}}\n"
        f"MAX_BODY_BYTES = {MAX_JSON_BODY_BYTES}\n"
    )
    return prelude + LUA_PATH.read_text()


def render(
    addresses: Mapping[str, str],
    *,
    authz_address: str,
    port: int,
    host: str = "127.0.0.1",
    admin_port: int = 0,
    descriptor_path: Path = DESCRIPTOR_PATH,
    bench: bool = False,
) -> dict[str, Any]:
    """The Envoy bootstrap, as a dict ready for JSON. `addresses` maps service name to host:port;
    `authz_address` is identity's signature-check endpoint."""
    contract = read_contract(load_descriptor(descriptor_path))
    missing = set(contract.grpc_services.values()) - set(addresses)
    if missing:
        raise ValueError(f"no address for services: {sorted(missing)}")
    http_filters = [
        {
            "name": _LUA,
            "typed_config": _typed(
                "extensions.filters.http.lua.v3.Lua",
                default_source_code={"inline_string": _lua_source(contract)},
            ),
        },
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": _typed(
                "extensions.filters.http.header_mutation.v3.HeaderMutation",
                # Only the gateway may tell a service who is calling: client copies never get through.
                mutations={"request_mutations": [{"remove": name} for name in CALLER_HEADERS]},
            ),
        },
        _ext_authz(),
        {
            "name": _TRANSCODER,
            "typed_config": _typed(
                "extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                proto_descriptor=str(descriptor_path),
                services=sorted(contract.grpc_services),
                print_options={"always_print_primitive_fields": True, "preserve_proto_field_names": True},
                convert_grpc_status=True,
                # FastAPI ignores query parameters it does not know; so do we (never a 503).
                ignore_unknown_query_parameters=True,
                # An unknown REST path is a 404 here, not a request forwarded to some service.
                request_validation_options={"reject_unknown_method": True},
                max_request_body_size=MAX_JSON_BODY_BYTES,
            ),
        },
        {
            "name": "envoy.filters.http.router",
            "typed_config": _typed("extensions.filters.http.router.v3.Router"),
        },
    ]
    connection_manager = _typed(
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="gateway",
        codec_type="AUTO",  # HTTP/1.1 for REST clients, HTTP/2 (h2c) for gRPC, one port
        route_config={
            "name": "chutes",
            "virtual_hosts": [{"name": "chutes", "domains": ["*"], "routes": _routes(contract, bench)}],
        },
        http_filters=http_filters,
    )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": {"socket_address": {"address": host, "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": connection_manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                *(_cluster(name, addresses[name]) for name in sorted(set(contract.grpc_services.values()))),
                _cluster(AUTHZ_CLUSTER, authz_address, http2=False),
            ],
        },
    }


def write_config(path: Path, addresses: Mapping[str, str], **options: Any) -> Path:
    """Render and write the config as JSON (Envoy reads JSON as YAML)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(render(addresses, **options), indent=1))
    return path
