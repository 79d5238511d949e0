"""What the harness measures: one Scenario per row; later work adds rows to SCENARIOS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

GET_CHUTE = "/chutes.registry.v1.RegistryService/GetChute"
#: What the invocation scenarios send to the echo chute's cords (examples/echo_chute.py).
ECHO_BODY = '{"text": "hi"}'
COUNT_BODY = '{"to": 3}'


def _get_chute_request() -> bytes:
    # Imported lazily: only the gRPC scenarios need the generated messages.
    from chutes.registry.v1 import registry_pb2

    message: bytes = registry_pb2.GetChuteRequest(chute_id_or_name="abc").SerializeToString()
    return message


@dataclass(frozen=True)
class Scenario:
    name: str
    #: "client": not a load generator but a measurement of the harness's own (invocation.py), named
    #: by `client`.
    tool: Literal["wrk", "h2load", "client"]
    #: Where the load goes: "gateway", a service name (its own port, bypassing Envoy), "baseline"
    #: (the FastAPI server of bench/baselines/, started against the suite's database), or
    #: "instance" (the echo chute's instance, straight to the port its miner gave it).
    target: str
    #: Request path; "{chute_id}" is replaced by the seeded chute that GET scenarios read.
    path: str
    #: The service that does the work; its CPU per request gets a column. None: Envoy answers alone.
    serving: str | None
    #: What it measures, one line (printed, and kept in line with bench/README.md).
    what: str
    #: gRPC scenarios: the serialized request message (h2load sends it framed, as POST).
    grpc_request: Callable[[], bytes] | None = None
    #: How each request proves who it is: not at all, an admin API key, or a fresh hotkey signature
    #: (each signature is used once: the gateway refuses exact replays).
    auth: Literal["none", "api_key", "hotkey"] = "none"
    #: Needs the seeded chutes (the database is seeded once, before the first such scenario).
    seeded: bool = False
    #: The gateway scenario this baseline scenario is compared with: the probe checks that both
    #: answer the same JSON (a warning lists the differences).
    pair: str | None = None
    #: HTTP method and JSON body (wrk sends them from a small Lua script).
    method: Literal["GET", "POST"] = "GET"
    body: str | None = None
    #: Calls the echo chute (deployed and warmed up once per harness run, before the first such
    #: scenario; the local miner runs it). On the gateway the request carries `Host: {slug}.localhost`.
    invocation: bool = False
    #: Fixed concurrency, whatever --connections says (the 1-connection latency rows).
    connections: int | None = None
    #: Fixed number of measured runs, whatever --repeat says (the cold-start scenarios).
    repeat: int | None = None
    #: tool "client": which measurement (invocation.measure; "upload" and "download" are the job
    #: file transfers of transfer.py, with a table of their own).
    client: Literal["sse", "warmup", "routable", "upload", "download", "ingest"] | None = None
    #: False: the CPU columns are not per request and show "-" (the per-run lines still print them).
    cpu: bool = True
    #: False: no latency is measured and p50/p99 show "-" (the pure-ingestion row).
    latency: bool = True
    #: Fixed seconds per measured run, whatever --duration says.
    duration: int | None = None
    #: wrk waits this many ms before each request on each connection: a rate well below what the
    #: machine can serve, so two suites that use different CPU besides Envoy are compared at the
    #: same rate (Envoy's CPU per request falls as the rate rises: more requests per wake-up).
    pace_ms: int | None = None
    #: After each run, wait until the echo chute's invocation records account for every call Envoy
    #: took on its host (Envoy's counters), and show both in the table (records.py).
    records: bool = False
    #: Settings of the suite the scenario runs in (`CHUTES_*` variables): scenarios with other
    #: settings than the default run in a suite of their own, started after the others.
    settings: tuple[tuple[str, str], ...] = ()
    #: Scenarios next to each other with the same key run interleaved: warm-ups first, then run 1 of
    #: each, run 2 of each, ... so that load from elsewhere on the machine falls on all of them alike
    #: (issue 14: ratios between the suite and its peers come from one run).
    interleave: str | None = None
    #: Each request reads another seeded chute, cycling over UNCACHED_CHUTES of them in order (more
    #: than the registry's response cache holds), from a wrk Lua script.
    uncached: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "envoy-direct", "wrk", "gateway", "/__bench/direct", None,
        "Envoy's own ceiling: a direct_response route, no filters, no upstream",
    ),
    Scenario(
        "rest-getchute-missing", "wrk", "gateway", "/chutes/abc", "registry",
        "REST GET of no such chute through Lua + transcoder + registry (one SQL miss, 404 JSON)",
    ),
    Scenario(
        "rest-getchute-missing-api-key", "wrk", "gateway", "/chutes/abc", "registry",
        "the same GET with an admin API key (verified in registry, cached for 4 s)", auth="api_key",
    ),
    Scenario(
        "rest-getchute-missing-hotkey", "wrk", "gateway", "/chutes/abc", "registry",
        "the same GET, hotkey-signed (ext_authz: identity checks sr25519 and the replay store)",
        auth="hotkey",
    ),
    Scenario(
        "grpc-getchute-missing", "h2load", "registry", GET_CHUTE, "registry",
        "native gRPC GetChute of no such chute, straight to the registry port (no Envoy)",
        _get_chute_request,
    ),
    Scenario(
        "grpc-gateway-getchute-missing", "h2load", "gateway", GET_CHUTE, "registry",
        "native gRPC GetChute through the gateway port (Envoy routes by prefix)", _get_chute_request,
    ),
    # Registry read paths against the FastAPI baselines (issues 4 and 14), on the same seeded
    # database: the suite, the lean peer (raw asyncpg, orjson) and the ORM baseline (the real API's
    # stack), their runs interleaved.
    Scenario(
        "rest-getchute", "wrk", "gateway", "/chutes/{chute_id}", "registry",
        "REST GET of a public seeded chute through the gateway, anonymous (200)", seeded=True,
        interleave="getchute",
    ),
    Scenario(
        "lean-getchute", "wrk", "lean", "/chutes/{chute_id}", "lean",
        "the same GET served by the lean peer: FastAPI + raw asyncpg, one statement, orjson"
        " (bench/baselines)", seeded=True, pair="rest-getchute", interleave="getchute",
    ),
    Scenario(
        "baseline-getchute", "wrk", "baseline", "/chutes/{chute_id}", "baseline",
        "the same GET served by FastAPI + SQLAlchemy ORM + asyncpg (bench/baselines)", seeded=True,
        pair="rest-getchute", interleave="getchute",
    ),
    Scenario(
        "rest-listchutes", "wrk", "gateway", "/chutes/?limit=25", "registry",
        "REST list, first page of 25 over the seeded public chutes, anonymous", seeded=True,
        interleave="listchutes",
    ),
    Scenario(
        "lean-listchutes", "wrk", "lean", "/chutes/?limit=25", "lean",
        "the same list served by the lean peer: a count and a page statement, orjson (bench/baselines)",
        seeded=True, pair="rest-listchutes", interleave="listchutes",
    ),
    Scenario(
        "baseline-listchutes", "wrk", "baseline", "/chutes/?limit=25", "baseline",
        "the same list served by FastAPI + SQLAlchemy ORM + asyncpg (bench/baselines)", seeded=True,
        pair="rest-listchutes", interleave="listchutes",
    ),
    Scenario(
        "rest-getchute-uncached", "wrk", "gateway", "/chutes/{chute_id}", "registry",
        "REST GET through the gateway, each request another of 30,000 public chutes (more than the"
        " registry's response cache holds), anonymous", seeded=True, uncached=True,
        interleave="getchute-uncached",
    ),
    Scenario(
        "lean-getchute-uncached", "wrk", "lean", "/chutes/{chute_id}", "lean",
        "the same cycling GETs served by the lean peer", seeded=True, uncached=True,
        pair="rest-getchute-uncached", interleave="getchute-uncached",
    ),
    # Chute invocation (issue 9): the echo chute on the local miner, straight to its instance vs
    # through the gateway (Envoy, the registry's invocation check with an API key).
    Scenario(
        "invoke-direct", "wrk", "instance", "/echo", "instance",
        "POST /echo straight to the echo chute's instance (uvicorn, no Envoy, no check)",
        method="POST", body=ECHO_BODY, invocation=True,
    ),
    Scenario(
        "invoke-gateway-api-key", "wrk", "gateway", "/echo", "instance",
        "the same POST through the gateway (Host: {slug}.localhost) with an API key",
        method="POST", body=ECHO_BODY, invocation=True, auth="api_key",
    ),
    Scenario(
        "invoke-check-direct", "wrk", "registry_authz", "/echo", "registry",
        "the registry's invocation check alone: what Envoy's ext_authz sends it (POST /echo, no body,"
        " Host, API key), straight to its port", method="POST", invocation=True, auth="api_key",
    ),
    Scenario(
        "invoke-direct-c1", "wrk", "instance", "/echo", "instance",
        "invoke-direct at one connection: latency without queueing", method="POST", body=ECHO_BODY,
        invocation=True, connections=1,
    ),
    Scenario(
        "invoke-gateway-api-key-c1", "wrk", "gateway", "/echo", "instance",
        "invoke-gateway-api-key at one connection: latency without queueing", method="POST",
        body=ECHO_BODY, invocation=True, auth="api_key", connections=1,
    ),
    Scenario(
        "invoke-check-direct-c1", "wrk", "registry_authz", "/echo", "registry",
        "invoke-check-direct at one connection: the check's round trip", method="POST", invocation=True,
        auth="api_key", connections=1,
    ),
    Scenario(
        "invoke-sse-first-event-direct", "client", "instance", "/count", "instance",
        "time to the first SSE event of POST /count, sequential, straight to the instance",
        method="POST", body=COUNT_BODY, invocation=True, client="sse", cpu=False,
    ),
    Scenario(
        "invoke-sse-first-event-gateway", "client", "gateway", "/count", "instance",
        "the same through the gateway with an API key", method="POST", body=COUNT_BODY,
        invocation=True, auth="api_key", client="sse", cpu=False,
    ),
    Scenario(
        "warmup-to-hot", "client", "gateway", "/chutes/warmup/{chute_id}", None,
        "a fresh copy of the echo chute: GET /chutes/warmup until the `hot` frame", invocation=True,
        auth="api_key", client="warmup", repeat=1, cpu=False,
    ),
    Scenario(
        "routable-after-probe", "client", "gateway", "/echo", None,
        "a fresh copy: the registry records READY (probe passed) -> first 200 through the gateway",
        method="POST", body=ECHO_BODY, invocation=True, auth="api_key", client="routable", repeat=1,
        cpu=False,
    ),
    # Invocation records (issue 11): what the metrics stream costs Envoy (on here, off in a suite of
    # its own), a minute behind the gateway with every call accounted for, then the ingestion alone
    # (last: its ~1.5 M rows would leave autovacuum work to the runs after it).
    Scenario(
        "records-als-on", "wrk", "gateway", "/echo", "metrics",
        "invoke-gateway-api-key paced (each connection waits 8 ms before each request): Envoy"
        " streams its access log to the registry and the metrics service", method="POST",
        body=ECHO_BODY, invocation=True, auth="api_key", pace_ms=8,
    ),
    Scenario(
        "records-invoke-60s", "wrk", "gateway", "/echo", "metrics",
        "invoke-gateway-api-key for 60 s: every call is a record (Envoy's counters of calls on the"
        " chute's host vs the rows)", method="POST", body=ECHO_BODY, invocation=True, auth="api_key",
        duration=60, records=True,
    ),
    Scenario(
        "records-ingest", "client", "metrics", "StreamAccessLogs", "metrics",
        "pre-built ALS messages (100 entries each) on 4 gRPC streams straight to the metrics"
        " service, as fast as it takes them; until every entry is a row", client="ingest", latency=False,
    ),
    Scenario(
        "records-als-off", "wrk", "gateway", "/echo", "metrics",
        "the same in a suite whose gateway sends the metrics service no access log (the registry's"
        " stays): CHUTES_GATEWAY_INVOCATION_RECORDS=false", method="POST", body=ECHO_BODY,
        invocation=True, auth="api_key", pace_ms=8,
        settings=(("CHUTES_GATEWAY_INVOCATION_RECORDS", "false"),),
    ),
    # Job output files (issue 10): 1 GiB through the gateway each way, the harness playing the
    # job's instance (upload, job token) and its owner (download, API key).
    Scenario(
        "job-upload-1gib", "client", "gateway", "/jobs/{job_id}/upload", "jobs",
        "a 1 GiB output file PUT as multipart through the gateway with its job token (streamed)",
        client="upload", cpu=False,
    ),
    Scenario(
        "job-download-1gib", "client", "gateway", "/jobs/{job_id}/download/{file_id}", "jobs",
        "the same 1 GiB file downloaded through the gateway by its owner (API key, streamed)",
        auth="api_key", client="download", cpu=False,
    ),
)  # fmt: skip
