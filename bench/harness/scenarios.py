"""What the harness measures: one Scenario per row; later work adds rows to SCENARIOS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

GET_CHUTE = "/chutes.registry.v1.RegistryService/GetChute"


def _get_chute_request() -> bytes:
    # Imported lazily: only the gRPC scenarios need the generated messages.
    from chutes.registry.v1 import registry_pb2

    message: bytes = registry_pb2.GetChuteRequest(chute_id_or_name="abc").SerializeToString()
    return message


@dataclass(frozen=True)
class Scenario:
    name: str
    tool: Literal["wrk", "h2load"]
    #: Where the load goes: "gateway", a service name (its own port, bypassing Envoy), or "baseline"
    #: (the FastAPI server of bench/baselines/, started against the suite's database).
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
    # Registry read paths against the FastAPI baseline (issue 4): each gateway scenario right before
    # its baseline, on the same seeded database, in the same harness run.
    Scenario(
        "rest-getchute", "wrk", "gateway", "/chutes/{chute_id}", "registry",
        "REST GET of a public seeded chute through the gateway, anonymous (200)", seeded=True,
    ),
    Scenario(
        "baseline-getchute", "wrk", "baseline", "/chutes/{chute_id}", "baseline",
        "the same GET served by FastAPI + SQLAlchemy ORM + asyncpg (bench/baselines)", seeded=True,
        pair="rest-getchute",
    ),
    Scenario(
        "rest-listchutes", "wrk", "gateway", "/chutes/?limit=25", "registry",
        "REST list, first page of 25 over the seeded public chutes, anonymous", seeded=True,
    ),
    Scenario(
        "baseline-listchutes", "wrk", "baseline", "/chutes/?limit=25", "baseline",
        "the same list served by FastAPI + SQLAlchemy ORM + asyncpg (bench/baselines)", seeded=True,
        pair="rest-listchutes",
    ),
)  # fmt: skip
