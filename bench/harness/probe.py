"""One request per scenario to see what it answers, and the baseline's JSON checked against the gateway's."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any

import grpc

from .invocation import host_header
from .scenarios import SCENARIOS, Scenario
from .suite import Suite


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.load(reply)


def json_differences(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Where two JSON documents differ (key order ignored, floats compared to 1e-9 relative)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        found = [f"{where}/{k}: only in the gateway's answer" for k in sorted(ours.keys() - theirs.keys())]
        found += [f"{where}/{k}: only in the baseline's answer" for k in sorted(theirs.keys() - ours.keys())]
        for key in sorted(ours.keys() & theirs.keys()):
            found += json_differences(ours[key], theirs[key], f"{where}/{key}")
        return found
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{where}: {len(ours)} items vs {len(theirs)}"]
        return [
            d
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for d in json_differences(a, b, f"{where}/{i}")
        ]
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(theirs, numbers) and not isinstance(ours, bool):
        return [] if math.isclose(ours, theirs, rel_tol=1e-9) else [f"{where}: {ours!r} vs {theirs!r}"]
    return [] if ours == theirs else [f"{where}: {ours!r} vs {theirs!r}"]


def check_same_json(suite: Suite, baseline: Scenario) -> None:
    """A baseline must answer what the gateway answers, or the comparison is not like for like."""
    gateway = next(s for s in SCENARIOS if s.name == baseline.pair)
    differences = json_differences(
        fetch_json(suite.scenario_url(gateway)), fetch_json(suite.scenario_url(baseline))
    )
    if differences:
        shown = "\n  ".join(differences[:10])
        more = f"\n  ... and {len(differences) - 10} more" if len(differences) > 10 else ""
        print(f"warning: {baseline.name} does not answer the same JSON as {gateway.name}:\n  {shown}{more}")
    else:
        print(f"  same JSON as {gateway.name}")


def probe(suite: Suite, scenario: Scenario) -> str | None:
    """Send one request and describe the answer (gRPC errors ride in trailers; h2load counts them as 2xx).
    None for the cold-start measurements and the ingestion runs, which count their own failures."""
    if scenario.client in ("warmup", "routable", "ingest"):
        return None
    url = suite.scenario_url(scenario)
    if scenario.grpc_request is None:
        headers = host_header(suite, scenario)
        data = None if scenario.body is None else scenario.body.encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        if scenario.auth == "api_key":
            headers["Authorization"] = suite.credentials().api_key
        elif scenario.auth == "hotkey":
            hotkey, nonce, signature = suite.credentials().signed("chutes", 1)[0]
            headers = {"X-Chutes-Hotkey": hotkey, "X-Chutes-Nonce": nonce, "X-Chutes-Signature": signature}
        try:
            request = urllib.request.Request(url, data, headers, method=scenario.method)
            with urllib.request.urlopen(request, timeout=5) as reply:
                reply.read()
                return f"HTTP {reply.status}"
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"
    target = url.removeprefix("http://").split("/", 1)[0]
    with grpc.insecure_channel(target) as channel:
        try:
            # No serializers: the message goes as the bytes we already have, and the reply is not parsed.
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(suite.path_of(scenario))
            call(scenario.grpc_request(), timeout=5)
            return "grpc OK"
        except grpc.RpcError as error:
            return f"grpc {error.code().name}"
