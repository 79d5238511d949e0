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
client-sent identity headers), buffer (the JSON body limit for bodies without a Content-Length;
off for uploads and chute invocations), ext_authz (hotkey signatures, checked by identity on the
raw body), grpc_json_transcoder, router.

Chute invocations (given `xds_address`, the registry's control plane: services/registry/xds.py):
`{slug}.{chute_domain}` is routed by one static route to the cluster of that name, which the
registry pushes over delta ADS with its instances (notes/runtime-facts.md). That virtual host
comes before the REST one; the Lua normaliser and the transcoder are off on it, so chute
responses (SSE included) pass through untouched and unbuffered; Envoy's own replies there are
FastAPI-shaped JSON; every answer carries `X-Chutes-InvocationID`.

Given `invocation_authz_address` too (the registry's check, services/registry/invocations.py), a
second ext_authz filter after identity's decides who may call a chute: off in the filter chain,
on only for the chute route, so REST requests never pay for it. Its denials (401, 404) reach the
client as the registry wrote them; the registry unreachable is a 503, never a pass. The caller's
credentials stop at the gateway: instances get only the verified `x-chutes-user-id`.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway.openapi import DOCS_HTML, INTERNAL_SUFFIX, document
from services.kit.headers import (
    ANONYMOUS_READS_HOST,
    CALLER_HEADERS,
    ORIGINAL_METHOD_HEADER,
    USER_ID_HEADER,
    VERDICT_REUSE_HEADER,
)
from services.kit.server import MAX_REQUEST_MESSAGE_BYTES

GATEWAY_DIR = Path(__file__).resolve().parent
DESCRIPTOR_PATH = GATEWAY_DIR / "chutes.binpb"
LUA_PATH = GATEWAY_DIR / "normalise.lua"
VERDICTS_LUA_PATH = GATEWAY_DIR / "verdicts.lua"
USAGE_LUA_PATH = GATEWAY_DIR / "usage.lua"

#: Largest JSON request body a REST client may send (deploy bodies carry code and readme); larger
#: ones get 413. Streamed bodies (job file uploads) are not limited by it.
MAX_JSON_BODY_BYTES = MAX_REQUEST_MESSAGE_BYTES // 2
#: Largest request head (request line and headers) a client may send: larger ones get a 431
#: from Envoy itself. The services accept far more metadata than Envoy forwards
#: (services/kit/server.py MAX_METADATA_BYTES), so the answer never depends on gRPC's own limit,
#: which refused heads between 8 and 16 KiB at random with a 429 naming internal headers.
MAX_REQUEST_HEADERS_KB = 8
#: Slow and idle clients (Envoy's edge-hardening guidance, issue 16: 460 idle or slowloris
#: connections were all open after 60 s): a request head must arrive within this...
REQUEST_HEADERS_TIMEOUT = "10s"
#: ...a connection without a request in flight is closed after this (a streaming invocation or
#: a long upload is a request in flight: never cut)...
IDLE_TIMEOUT = "60s"
#: ...and no more connections than this are open at once (Envoy refuses more at accept).
MAX_DOWNSTREAM_CONNECTIONS = 10_000
#: Upstream timeout of unary calls; streaming calls have none.
UNARY_TIMEOUT = "60s"
#: Path of the benchmark-only direct response (Envoy's own ceiling).
BENCH_DIRECT_PATH = "/__bench/direct"
#: Where the gateway serves the REST face's OpenAPI document (gateway/openapi.py) and its docs.
OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"


_LUA = "envoy.filters.http.lua"
_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_HEADER_MUTATION = "envoy.filters.http.header_mutation"
_BUFFER = "envoy.filters.http.buffer"
#: The request headers of a hotkey signature; ext_authz runs only when all three are present.
SIGNATURE_HEADERS = ("x-chutes-hotkey", "x-chutes-nonce", "x-chutes-signature")
#: How long the gateway waits for identity to check a signature before answering 503.
AUTHZ_TIMEOUT = "2s"
#: The cluster of identity's signature-check endpoint (HTTP/1.1).
AUTHZ_CLUSTER = "identity_authz"
#: The registry's check of chute invocations: its filter (an ext_authz of its own name, enabled
#: only on the chute route) and its cluster (HTTP/1.1).
INVOCATION_AUTHZ = "chutes.invocation_authz"
#: The Lua filter in front of it that reuses its allows for a moment (gateway/verdicts.lua), its
#: dynamic metadata namespace (the registry's answer says for how long: VERDICT_REUSE_HEADER).
INVOCATION_VERDICTS = "chutes.verdicts"
#: The Lua filter that reads token usage from chute responses as they pass (gateway/usage.lua),
#: and its dynamic metadata namespace, which the access log carries as tags.
INVOCATION_USAGE = "chutes.usage"
USAGE_TAGS = ("input_tokens", "output_tokens", "first_token_ms", "tokens_per_second")
INVOCATION_AUTHZ_CLUSTER = "registry_authz"
#: Where an instance serves the platform's own endpoints (never routed from a chute's callers).
INSTANCE_ENDPOINTS_PREFIX = "/_chutes/"
#: Credentials a chute instance never sees (they would let its operator act as the caller).
CREDENTIAL_HEADERS = ("authorization", "x-api-key", *SIGNATURE_HEADERS)

#: Chute clusters (pushed by the registry) report stats as `cluster.chute-{slug}.*`, all rejected:
#: at 41-69 KB per cluster, stats would dominate Envoy's memory; ALS carries the numbers.
CHUTE_STAT_PREFIX = "chute-"
#: Metadata namespace of chute clusters (`chute_id`) and of their hosts (`instance_id`).
METADATA_NAMESPACE = "chutes"
#: The control plane's cluster when it is not the registry's own cluster.
XDS_CLUSTER = "xds"
#: The access-log service's cluster when it is not one of the services' clusters.
ALS_CLUSTER = "als"
#: The response header naming an invocation (Envoy's request id).
INVOCATION_ID_HEADER = "X-Chutes-InvocationID"
#: Retries of an invocation that never reached its instance (never one that did: not idempotent).
INVOCATION_RETRY_ON = "connect-failure,refused-stream,reset-before-request"


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
    #: Query parameters that are repeated fields (`?x=1&x=2` is a list); any other one given
    #: twice takes its last value, as FastAPI does.
    repeated_query_params: set[str] = field(default_factory=set)
    #: (REST method, Lua pattern of the path, the path variables' field names, proto and JSON
    #: spellings): a query parameter naming one of them is dropped (see `path_bindings`).
    path_bindings: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

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


def _path_variables(template: str, request: descriptor_pb2.DescriptorProto) -> tuple[str, ...]:
    """The request fields a path template binds (`/chutes/{chute_id}` binds `chute_id`), in
    both spellings the transcoder accepts in a query string (`chute_id`, `chuteId`)."""
    names = {segment[1:].split("=")[0].split("}")[0].split(".")[0] for segment in template.split("/")
             if segment.startswith("{")}  # fmt: skip
    json_names = {f.json_name for f in request.field if f.name in names and f.json_name}
    return tuple(sorted(names | json_names))


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
                if http_method and "{" in http_path:
                    contract.path_bindings.append(
                        (
                            http_method,
                            _path_pattern(http_path, "%"),
                            _path_variables(http_path, messages[method.input_type]),
                        )
                    )
                if http_method and rule.body != "*":
                    request = messages[method.input_type]
                    contract.repeated_query_params.update(
                        spelling
                        for f in request.field
                        if f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                        for spelling in (f.name, f.json_name)
                    )
                    if rule.body:
                        contract.body_fields.add(rule.body)
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
    """The cluster of one address, or of a service's replicas (`host:port,host:port`, as
    `up --replicas N` gives them): one endpoint each. No outlier detection: a request that
    cannot reach a stopped replica goes to another at once (`_replica_retries`; a refused
    connection on loopback costs nothing), and a replica the supervisor restarted is used again
    as soon as it listens, where an ejection would keep it out for seconds after, leaving the
    other one alone exactly when that one may be the next to stop."""
    endpoints = []
    discovery = "STATIC"
    for one in address.split(","):
        host, _, port = one.rpartition(":")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            discovery = "STRICT_DNS"  # a service name, e.g. in Kubernetes
        endpoints.append(
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
        )
    cluster: dict[str, Any] = {
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
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }
    return cluster


#: Retries of a request no replica received (a replica stopped or restarting): never one that
#: reached a replica, so they are safe for every method.
REPLICA_RETRY_ON = "connect-failure,refused-stream,reset-before-request"


def _replica_retries() -> dict[str, Any]:
    """A retry policy (route or ext_authz) that tries another replica than the one that failed."""
    return {
        "retry_on": REPLICA_RETRY_ON,
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": _typed("extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def _routes(contract: Contract, bench: bool, openapi: str = "") -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    if openapi:
        # Answered by Envoy itself: no service, no transcoding (no RPC has these paths).
        served = _typed("config.route.v3.FilterConfig", disabled=True)
        for path, body, content_type in (
            (OPENAPI_PATH, openapi, "application/json"),
            (DOCS_PATH, DOCS_HTML, "text/html; charset=utf-8"),
        ):
            routes.append(
                {
                    "match": {
                        "path": path,
                        "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                    },
                    "direct_response": {"status": 200, "body": {"inline_string": body}},
                    "response_headers_to_add": [
                        {
                            "header": {"key": "content-type", "value": content_type},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    ],
                    "typed_per_filter_config": {_LUA: served, _TRANSCODER: served},
                }
            )
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
        if rpc.client_streaming:
            # Native gRPC uploads stream to the service: no body limit, nothing buffered whole.
            route["typed_per_filter_config"] = {
                _BUFFER: _typed("config.route.v3.FilterConfig", disabled=True)
            }
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
                    ),
                    _BUFFER: _typed("config.route.v3.FilterConfig", disabled=True),
                },
            }
        )
    # gRPC clients read a 404 as UNIMPLEMENTED.
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    return routes


#: An anonymous GET of a chute by id (lower-case UUID; the query string is not part of the match).
ANONYMOUS_READ_PATH = r"^/chutes/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _anonymous_read_route() -> dict[str, Any]:
    """Anonymous `GET /chutes/<uuid>` straight to the registry's plain HTTP endpoint (the one of
    the invocation checks, told apart by Host), not transcoded to GetChuteJson: the same JSON
    from the same cache without grpc.aio's per-call cost or the transcoder (bench/README.md,
    issue 14; services/registry/anonymous_reads.py). Any credential (an Authorization header, any
    signature header) takes the transcoded route, where the caller is known."""
    disabled = _typed("config.route.v3.FilterConfig", disabled=True)
    credentials = ("authorization", *SIGNATURE_HEADERS)
    return {
        "match": {
            "safe_regex": {"regex": ANONYMOUS_READ_PATH},
            "headers": [
                {"name": ":method", "string_match": {"exact": "GET"}},
                *({"name": name, "present_match": True, "invert_match": True} for name in credentials),
            ],
        },
        "route": {
            "cluster": INVOCATION_AUTHZ_CLUSTER,
            "timeout": UNARY_TIMEOUT,
            "host_rewrite_literal": ANONYMOUS_READS_HOST,
        },
        # The answer is final JSON (errors included, `{"detail"}`): nothing to normalise or transcode.
        "typed_per_filter_config": {_LUA: disabled, _TRANSCODER: disabled},
    }


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
    costs identity a third of the CPU per check (services/kit/authz_http.py).
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


def _version() -> str:
    try:
        return importlib.metadata.version("chutes-suite")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "0"


def _lua_source(contract: Contract) -> str:
    def lua_set(names: set[str]) -> str:
        return "{" + ", ".join(f"[{json.dumps(n)}] = true" for n in sorted(names)) + "}"

    prelude = (
        "-- Rendered from the descriptor by gateway/render.py.\n"
        f"BOOL_QUERY_PARAMS = {lua_set(contract.bool_query_params)}\n"
        f"BODY_FIELDS = {lua_set(contract.body_fields)}\n"
        f"REPEATED_QUERY_PARAMS = {lua_set(contract.repeated_query_params)}\n"
        f"PATH_VARIABLES = {lua_set({n for _, _, names in contract.path_bindings for n in names})}\n"
        "PATH_BINDINGS = {"
        + ", ".join(
            f"{{{json.dumps(m)}, {json.dumps(p)}, {lua_set(set(names))}}}"
            for m, p, names in contract.path_bindings
        )
        + "}\n"
        f"STREAMED_PATHS = {{{', '.join(json.dumps(p) for p in contract.streamed_paths('%'))}}}\n"
        "ROUTE_METHODS = {"
        + ", ".join(
            f"{{{json.dumps(rpc.http_method)}, {json.dumps(_path_pattern(rpc.http_path, '%'))}}}"
            for rpc in contract.rpcs
            if rpc.http_method
        )
        + "}\n"
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
    xds_address: str | None = None,
    chute_domain: str = "localhost",
    als_address: str | None = None,
    als_addresses: Sequence[str] = (),
    invocation_authz_address: str | None = None,
) -> dict[str, Any]:
    """The Envoy bootstrap, as a dict ready for JSON. `addresses` maps service name to host:port;
    `authz_address` is identity's signature-check endpoint.

    With `xds_address` (the registry's gRPC address: its cluster is reused), chutes are routed by
    host `{slug}.{chute_domain}` to the clusters the control plane pushes; with `als_address`
    and/or `als_addresses` too, each invocation's access-log entry streams to every one of them
    over gRPC (one access logger per sink: the registry's scaling, the metrics' records); with
    `invocation_authz_address` (the registry's invocation check), calling a chute needs a caller
    who may see it."""
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
            "name": _HEADER_MUTATION,
            "typed_config": _typed(
                "extensions.filters.http.header_mutation.v3.HeaderMutation",
                # Only the gateway may tell a service who is calling: client copies never get through.
                mutations={"request_mutations": [{"remove": name} for name in CALLER_HEADERS]},
            ),
        },
        {
            # Every other body is limited as it arrives, whatever its framing: the Lua normaliser
            # refuses a Content-Length over the limit up front, this refuses a chunked or native
            # gRPC body once it passes the limit (the transcoder's own limit does not count what
            # it has already turned into a message: a 200 MiB chunked body grew Envoy by
            # 252 MB). At most this much is held per request.
            "name": _BUFFER,
            "typed_config": _typed(
                "extensions.filters.http.buffer.v3.Buffer", max_request_bytes=MAX_JSON_BODY_BYTES
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
                request_validation_options={
                    "reject_unknown_method": True,
                    # On `body: "*"` routes a body field naming a path variable would otherwise
                    # choose the object instead of the path, which API key scopes are judged on.
                    "reject_binding_body_field_collisions": True,
                },
                max_request_body_size=MAX_JSON_BODY_BYTES,
            ),
        },
        {
            "name": "envoy.filters.http.router",
            "typed_config": _typed("extensions.filters.http.router.v3.Router"),
        },
    ]
    clusters = [
        *(_cluster(name, addresses[name]) for name in sorted(set(contract.grpc_services.values()))),
        _cluster(AUTHZ_CLUSTER, authz_address, http2=False),
    ]
    openapi = json.dumps(
        document(load_descriptor(descriptor_path), version=_version()), separators=(",", ":")
    )
    main_routes = _routes(contract, bench, openapi)
    virtual_hosts = [{"name": "chutes", "domains": ["*"], "routes": main_routes}]
    connection_manager = _typed(
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="gateway",
        codec_type="AUTO",  # HTTP/1.1 for REST clients, HTTP/2 (h2c) for gRPC, one port
        route_config={
            "name": "chutes",
            "virtual_hosts": virtual_hosts,
            # The OpenAPI document is a direct response (Envoy allows 4 KiB by default).
            "max_direct_response_body_size_bytes": 2 * len(openapi) + 65536,
        },
        http_filters=http_filters,
        max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
        local_reply_config={"mappers": _edge_local_replies()},
        request_headers_timeout=REQUEST_HEADERS_TIMEOUT,
        common_http_protocol_options={"idle_timeout": IDLE_TIMEOUT},
        # Envoy's edge defaults for HTTP/2 clients (native gRPC): bounded streams per connection
        # and flow-control windows, so one client cannot make Envoy hold megabytes per stream.
        http2_protocol_options={
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
    )
    bootstrap: dict[str, Any] = {
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
            "clusters": clusters,
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": _typed(
                        "extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS,
                    ),
                }
            ]
        },
    }
    if xds_address is not None:
        xds_cluster = _grpc_cluster(XDS_CLUSTER, xds_address, addresses, clusters)
        sinks = [*([als_address] if als_address is not None else []), *als_addresses]
        als_clusters = [
            _grpc_cluster(f"{ALS_CLUSTER}-{i}" if i else ALS_CLUSTER, address, addresses, clusters)
            for i, address in enumerate(dict.fromkeys(sinks))
        ]
        domain = chute_domain.strip(".").lower()
        checked = invocation_authz_address is not None
        if invocation_authz_address is not None:
            clusters.append(_cluster(INVOCATION_AUTHZ_CLUSTER, invocation_authz_address, http2=False))
            main_routes.insert(0, _anonymous_read_route())
            after_identity = next(i for i, f in enumerate(http_filters) if f["name"] == _EXT_AUTHZ) + 1
            http_filters[after_identity:after_identity] = [_invocation_verdicts(), _invocation_authz()]
        if als_clusters:
            before_transcoder = next(i for i, f in enumerate(http_filters) if f["name"] == _TRANSCODER)
            http_filters.insert(before_transcoder, _invocation_usage())
        virtual_hosts.insert(0, _invocation_vhost(domain, checked=checked, usage=bool(als_clusters)))
        connection_manager["strip_any_host_port"] = True  # `slug.localhost:8000` is `slug.localhost`
        connection_manager["local_reply_config"]["mappers"] += _invocation_local_replies(
            domain, checked=checked
        )["mappers"]
        if als_clusters:
            connection_manager["access_log"] = [_invocation_access_log(domain, c) for c in als_clusters]
        bootstrap.update(_dynamic_bootstrap(xds_cluster))
    if any(
        "," in address for address in (*addresses.values(), authz_address, invocation_authz_address or "")
    ):
        _retry_on_other_replicas(virtual_hosts, http_filters)
    return bootstrap


def _idempotent_routes(routes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Before each service's route, the same for REST GETs (the transcoder keeps the method in
    ORIGINAL_METHOD_HEADER): a read may also be retried after a reset, when a replica died while
    answering it, since asking again changes nothing."""
    for route in routes:
        prefix = route["match"].get("prefix", "/")
        if prefix != "/" and "route" in route and len(route["match"]) == 1:
            get = {"name": ORIGINAL_METHOD_HEADER, "string_match": {"exact": "GET"}}
            retries = _replica_retries() | {"retry_on": REPLICA_RETRY_ON + ",reset"}
            yield {
                "match": {"prefix": prefix, "headers": [get]},
                "route": {**route["route"], "retry_policy": retries},
            }
        yield route


def _retry_on_other_replicas(virtual_hosts: list[dict[str, Any]], http_filters: list[dict[str, Any]]) -> None:
    """With several replicas of the services, a request (or a check) that reached none of them, as
    while one stops or restarts, goes to another instead of failing (one replica: nothing to try)."""
    for host in virtual_hosts:
        if host["name"] == "chutes":
            host["retry_policy"] = _replica_retries()
            host["routes"] = [*_idempotent_routes(host["routes"])]
    for http_filter in http_filters:
        config = http_filter.get("typed_config", {})
        config = config.get("extension_config", {}).get("typed_config", config)
        if "http_service" in config:
            config["http_service"]["retry_policy"] = _replica_retries()


def _grpc_cluster(
    name: str, address: str, addresses: Mapping[str, str], clusters: list[dict[str, Any]]
) -> str:
    """The (HTTP/2) cluster to reach `address`: a service's own when it is one, else a new one."""
    for service, service_address in sorted(addresses.items()):
        if service_address == address and any(c["name"] == service for c in clusters):
            return service
    clusters.append(_cluster(name, address))
    return name


def _invocation_id() -> dict[str, Any]:
    return {
        "header": {"key": INVOCATION_ID_HEADER, "value": "%REQ(x-request-id)%"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }


def _chute_host(domain: str) -> dict[str, Any]:
    """Matches requests for a chute (`:authority` is `*.{domain}`, its port already stripped)."""
    return {
        "header_filter": {
            "header": {"name": ":authority", "string_match": {"suffix": f".{domain}", "ignore_case": True}}
        }
    }


def _invocation_authz() -> dict[str, Any]:
    """The registry's check of who may call a chute (services/registry/invocations.py): the
    caller's credential (identity's verified `x-chutes-user-id`, or an API key) and the host. Off
    unless a route enables it (the chute route); unreachable or slow means 503, never a pass.
    Bodies are not sent: invocations stream to the instance, unbuffered."""
    check = _typed(
        "extensions.filters.http.ext_authz.v3.ExtAuthz",
        http_service={
            "server_uri": {
                "uri": f"http://{INVOCATION_AUTHZ_CLUSTER}",
                "cluster": INVOCATION_AUTHZ_CLUSTER,
                "timeout": AUTHZ_TIMEOUT,
            },
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"exact": CALLER_HEADERS[0]}]},
                "allowed_client_headers": {"patterns": [{"exact": "content-type"}]},
                # What gateway/verdicts.lua needs to reuse an allow (as ext_authz metadata).
                "dynamic_metadata_from_headers": {
                    "patterns": [{"exact": CALLER_HEADERS[0]}, {"exact": VERDICT_REUSE_HEADER}]
                },
            },
        },
        # Besides method, path, host and content-length, which Envoy always sends.
        allowed_headers={"patterns": [{"exact": "authorization"}, {"exact": CALLER_HEADERS[0]}]},
        failure_mode_allow=False,
        status_on_error={"code": "ServiceUnavailable"},
        # Skipped when gateway/verdicts.lua reused an allow for this request.
        filter_enabled_metadata={
            "filter": INVOCATION_VERDICTS,
            "path": [{"key": "reused"}],
            "value": {"bool_match": True},
            "invert": True,
        },
    )
    return {"name": INVOCATION_AUTHZ, "typed_config": check, "disabled": True}


def _invocation_usage() -> dict[str, Any]:
    """Token usage read from chute responses as they stream past (gateway/usage.lua). Off unless a
    route enables it (the chute route)."""
    lua = _typed(
        "extensions.filters.http.lua.v3.Lua",
        source_codes={INVOCATION_USAGE: {"inline_string": USAGE_LUA_PATH.read_text()}},
    )
    return {"name": INVOCATION_USAGE, "typed_config": lua, "disabled": True}


def _invocation_verdicts() -> dict[str, Any]:
    """The registry's allows, reused per Envoy worker for as long as it says (gateway/verdicts.lua).
    Off unless a route enables it (the chute route), like the check it stands in front of."""
    lua = _typed(
        "extensions.filters.http.lua.v3.Lua",
        source_codes={INVOCATION_VERDICTS: {"inline_string": VERDICTS_LUA_PATH.read_text()}},
    )
    return {"name": INVOCATION_VERDICTS, "typed_config": lua, "disabled": True}


def _invocation_vhost(domain: str, *, checked: bool = False, usage: bool = False) -> dict[str, Any]:
    """One route for every chute: the cluster named by the host. `*.{domain}` also keeps hosts
    like `registry` or `xds` from naming the gateway's own clusters. `checked`: the registry's
    invocation check runs on it, and the caller's credentials go no further. `usage`: token usage
    is read from responses for the access log."""
    disabled = _typed("config.route.v3.FilterConfig", disabled=True)
    # Any per-route config enables a filter that is off in the chain.
    enabled: dict[str, Any] = {}
    if checked:
        enabled[INVOCATION_VERDICTS] = _typed(
            "extensions.filters.http.lua.v3.LuaPerRoute", name=INVOCATION_VERDICTS
        )
        enabled[INVOCATION_AUTHZ] = _typed(
            "extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", check_settings={}
        )
    if usage:
        enabled[INVOCATION_USAGE] = _typed(
            "extensions.filters.http.lua.v3.LuaPerRoute", name=INVOCATION_USAGE
        )
    checks: dict[str, Any] = {"typed_per_filter_config": enabled} if enabled else {}
    if checked:
        checks["request_headers_to_remove"] = list(CREDENTIAL_HEADERS)
    return {
        "name": "invocations",
        "domains": [f"*.{domain}"],
        "routes": [
            {
                # The instances' platform endpoints (evidence, logs: chutes/evidence.py,
                # chutes/instance_logs.py) are for the services, which reach instances directly;
                # a chute's callers get what an unknown path gets from the chute itself.
                "match": {"prefix": INSTANCE_ENDPOINTS_PREFIX},
                # Shaped {"detail": ...} by the chute hosts' local replies.
                "direct_response": {"status": 404, "body": {"inline_string": "Not Found"}},
            },
            {
                **checks,
                "match": {"prefix": "/"},
                "route": {
                    "cluster_header": ":authority",
                    "cluster_not_found_response_code": "NOT_FOUND",
                    "timeout": "0s",  # invocations run as long as the chute takes; SSE streams
                    "retry_policy": {
                        "retry_on": INVOCATION_RETRY_ON,
                        "num_retries": 1,
                        "retry_host_predicate": [
                            {
                                "name": "envoy.retry_host_predicates.previous_hosts",
                                "typed_config": _typed(
                                    "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                                ),
                            }
                        ],
                        "host_selection_retry_max_attempts": 3,
                    },
                },
                "request_headers_to_add": [
                    {
                        "header": {
                            "key": "x-chutes-chute-id",
                            "value": f"%CLUSTER_METADATA({METADATA_NAMESPACE}:chute_id)%",
                        },
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    },
                ],
            },
        ],
        "response_headers_to_add": [_invocation_id()],
        # Chute responses are not REST API responses: no error rewriting, no buffering, no
        # transcoding (a chute path may look like an API path).
        "typed_per_filter_config": {
            _LUA: disabled,
            _TRANSCODER: disabled,
            _BUFFER: disabled,  # invocation bodies stream to the instance, whatever their size
            # Envoy keeps a client's own x-request-id (the gateway does not use the remote
            # address), so the invocation id is made here, before routing: the instance, the
            # access log and the answer (Envoy's own replies included) all carry this one.
            _HEADER_MUTATION: _typed(
                "extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute",
                mutations={
                    "request_mutations": [
                        {
                            "append": {
                                "header": {"key": "x-request-id", "value": "%UNIQUE_ID%"},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            }
                        }
                    ]
                },
            ),
        },
    }


def _edge_local_replies() -> list[dict[str, Any]]:
    """Envoy's answers that no HTTP filter sees (the request was refused by the codec, before the
    filter chain: the Lua normaliser cannot shape them), FastAPI-shaped for every host."""

    def status(code: int, detail: str) -> dict[str, Any]:
        return {
            "filter": {
                "status_code_filter": {
                    "comparison": {
                        "op": "EQ",
                        "value": {"default_value": code, "runtime_key": f"chutes.local_reply.{code}"},
                    }
                }
            },
            "body_format_override": {"json_format": {"detail": detail}},
        }

    return [
        status(431, "Request Header Fields Too Large"),
        status(408, "Request Timeout"),  # the head did not arrive in REQUEST_HEADERS_TIMEOUT
    ]


def _invocation_local_replies(domain: str, *, checked: bool = False) -> dict[str, Any]:
    """Envoy's own answers to chute requests, FastAPI-shaped. Only chute hosts: the REST API's
    local replies are the Lua normaliser's business. Denials of the ext_authz checks (`UAEX`)
    are FastAPI-shaped already (identity's and, when `checked`, the registry's): they pass as they
    are, but a check that could not be made (503, no body) gets a detail."""

    def mapper(detail: str, flags: list[str] | None = None, status: int | None = None) -> dict[str, Any]:
        match = _chute_host(domain)
        if flags:
            match = {"and_filter": {"filters": [match, {"response_flag_filter": {"flags": flags}}]}}
        out: dict[str, Any] = {
            "filter": match,
            "headers_to_add": [_invocation_id()],
            "body_format_override": {"json_format": {"detail": detail}},
        }
        if status is not None:
            out["status_code"] = status
        return out

    def authz(unreachable: bool) -> dict[str, Any]:
        """A check's denial passes as the check wrote it; a check that could not be made (Envoy's
        `status_on_error`, 503 without a body) gets a detail."""
        status = {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ" if unreachable else "NE",
                    "value": {"default_value": 503, "runtime_key": "chutes.invocation_authz.error_status"},
                }
            }
        }
        flag = {"response_flag_filter": {"flags": ["UAEX"]}}
        out: dict[str, Any] = {
            "filter": {"and_filter": {"filters": [_chute_host(domain), flag, status]}},
            "headers_to_add": [_invocation_id()],
            "body_format_override": {"json_format": {"detail": "Service Unavailable"}}
            if unreachable
            else {"text_format": "%LOCAL_REPLY_BODY%", "content_type": "application/json"},
        }
        return out

    chute_id = f"%CLUSTER_METADATA({METADATA_NAMESPACE}:chute_id)%"
    checks = [authz(unreachable=True), authz(unreachable=False)] if checked else []
    return {
        "mappers": [
            *checks,
            mapper(f"No instances available (yet) for chute_id={chute_id}", ["UH"], 503),
            mapper("No matching chute found!", ["NR", "NC"], 404),
            mapper("Infrastructure is at maximum capacity, try again later", ["UO"], 429),
            mapper("%LOCAL_REPLY_BODY%"),  # anything else Envoy answers for a chute: same shape
        ]
    }


def _invocation_access_log(domain: str, cluster: str) -> dict[str, Any]:
    def tag(name: str, kind: str, key: str) -> dict[str, Any]:
        return {
            "tag": name,
            "metadata": {
                "kind": {kind: {}},
                "metadata_key": {"key": METADATA_NAMESPACE, "path": [{"key": key}]},
            },
        }

    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": _chute_host(domain),
        "typed_config": _typed(
            "extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            common_config={
                "log_name": "invocations",
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
                "buffer_flush_interval": "0.5s",
                # Fewer, larger messages under load (each costs the registry's gRPC stream a
                # message's overhead): ~5 µs less registry CPU per call than 16 KiB. The interval
                # still bounds how late an entry (a cold chute's 503) arrives.
                "buffer_size_bytes": 65536,
                "custom_tags": [
                    tag("chute_id", "cluster", "chute_id"),
                    tag("instance_id", "host", "instance_id"),
                    # What gateway/usage.lua read from the response (absent: no usage in it).
                    *(
                        {
                            "tag": name,
                            "metadata": {
                                "kind": {"request": {}},
                                "metadata_key": {"key": INVOCATION_USAGE, "path": [{"key": name}]},
                            },
                        }
                        for name in USAGE_TAGS
                    ),
                ],
            },
            # The caller as the instance saw it (set by the gateway's checks, never by a client).
            additional_request_headers_to_log=["x-chutes-chute-id", USER_ID_HEADER],
            additional_response_headers_to_log=[INVOCATION_ID_HEADER.lower()],
        ),
    }


def _dynamic_bootstrap(xds_cluster: str) -> dict[str, Any]:
    """Chute clusters over delta ADS, and what they need from the bootstrap."""
    return {
        "node": {"id": "chutes-gateway", "cluster": "chutes-gateway"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": xds_cluster,
                            # Reconnect fast after a registry restart (default 0.5 s .. 30 s).
                            "retry_policy": {
                                "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}
                            },
                        }
                    }
                ],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {
                        # Queued requests count for least request, so an instance with a queue is
                        # not picked over an idle one (off by default).
                        "envoy.reloadable_features.least_request_lb_count_pending_requests": True
                    },
                },
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "stats_config": {
            "stats_matcher": {"exclusion_list": {"patterns": [{"prefix": f"cluster.{CHUTE_STAT_PREFIX}"}]}}
        },
    }


def write_config(path: Path, addresses: Mapping[str, str], **options: Any) -> Path:
    """Render and write the config as JSON (Envoy reads JSON as YAML)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(render(addresses, **options), indent=1))
    return path
