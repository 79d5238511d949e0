"""The load generators: wrk (HTTP/1.1 REST) and h2load (HTTP/2 gRPC), their output, CPU per request;
and the harness's own client measurements (invocation.py) put in the same shape."""

from __future__ import annotations

import re
import resource
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import invocation, records
from .credentials import SIGNATURES_PER_SECOND, SIGNED_WRK_SCRIPT
from .processes import CLOCK_TICKS
from .scenarios import Scenario
from .suite import Suite

INSTALL_HINT = "apt-get update && apt-get install -y wrk nghttp2-client"
TOOL_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client"}


@dataclass
class Run:
    """One load-generator run."""

    requests: int
    #: None where a rate means nothing (cold starts).
    rps: float | None
    p50_ms: float
    p99_ms: float
    non_2xx: int
    #: Connection/stream failures (wrk socket errors, h2load failed+errored+timeout).
    errors: int
    #: Process name -> CPU µs per completed request ("loadgen" is wrk/h2load itself).
    cpu_us: dict[str, float] = field(default_factory=dict)
    #: Invocation records: (calls to account for, rows that do): the ingestion runs' entries sent,
    #: or the calls Envoy took on the echo chute's host (records.py).
    records: tuple[int, int] | None = None


class ToolMissing(Exception):
    pass


def require_tools(scenarios: Sequence[Scenario]) -> None:
    missing = sorted({s.tool for s in scenarios if s.tool != "client" and shutil.which(s.tool) is None})
    if missing:
        which = ", ".join(f"{tool} (apt package {TOOL_PACKAGES[tool]})" for tool in missing)
        raise ToolMissing(f"missing load generator(s): {which}\ninstall them with: {INSTALL_HINT}")


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * _UNIT_MS[match[2]]


def _search_int(pattern: str, text: str, default: int | None = None) -> int:
    match = re.search(pattern, text)
    if match:
        return int(match[1])
    if default is None:
        raise ValueError(f"load generator output lacks /{pattern}/:\n{text}")
    return default


def parse_wrk(output: str) -> Run:
    """Parse `wrk --latency` output. wrk counts status >= 400 as "Non-2xx or 3xx"."""
    # wrk pads latencies in seconds with a trailing space ("1.03s ").
    latencies = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if not rps or set(latencies) != {"50", "99"}:
        raise ValueError(f"unexpected wrk output:\n{output}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Run(
        requests=_search_int(r"(\d+) requests in", output),
        rps=float(rps[1]),
        p50_ms=_wrk_ms(latencies["50"]),
        p99_ms=_wrk_ms(latencies["99"]),
        non_2xx=_search_int(r"Non-2xx or 3xx responses: (\d+)", output, default=0),
        errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
    )


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    # Nearest rank, the same definition wrk uses for its distribution.
    index = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def parse_h2load(output: str, log: str) -> Run:
    """h2load's summary has no percentiles: they come from its --log-file (start µs, status, duration µs)."""
    rps = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", output, re.MULTILINE)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.MULTILINE)
    if not rps or not codes:
        raise ValueError(f"unexpected h2load output:\n{output}")
    durations_ms = sorted(int(line.split("\t")[2]) / 1000 for line in log.splitlines() if line.strip())
    if not durations_ms:
        raise ValueError(f"h2load logged no requests:\n{output}")
    return Run(
        requests=_search_int(r"requests: \d+ total, \d+ started, (\d+) done", output),
        rps=float(rps[1]),
        p50_ms=_percentile(durations_ms, 0.50),
        p99_ms=_percentile(durations_ms, 0.99),
        non_2xx=sum(int(n) for n in codes.groups()[1:]),
        errors=sum(int(n) for n in re.findall(r"(\d+) (?:failed|errored|timeout)", output)),
    )


@dataclass(frozen=True)
class Load:
    duration: int
    connections: int
    threads: int


def wrk_command(url: str, load: Load, extra: Sequence[str] = ()) -> list[str]:
    return [
        "wrk",
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{load.duration}s",
        "--latency",
        *extra,
        url,
    ]


#: A wrk script that sends every request with the scenario's method and JSON body.
BODY_WRK_SCRIPT = """
wrk.method = "%(method)s"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
"""
#: Appended for a paced scenario: each connection waits this long before each request.
PACE_WRK_SCRIPT = """
function delay()
  return %(ms)s
end
"""


#: The uncached scenarios: each request the next chute of the list, in order, so a
#: least-recently-used cache smaller than the list never holds the next one. Each run starts where
#: the scenario's previous run (its warm-up included) stopped: a run starting anywhere else would
#: find the chutes the previous one asked for last still cached (a first version started each run
#: at a random place, and its later runs were partly cache hits).
CYCLE_WRK_SCRIPT = """
local ids = {%(ids)s}
local count = #ids
local next_index = %(start)d
request = function()
  next_index = next_index %% count + 1
  return wrk.format("GET", "%(prefix)s" .. ids[next_index])
end
"""


#: Per uncached scenario: where in the list of chutes its next run starts (0-based, before the
#: first increment of the script, so the first request reads the chute after it).
_CYCLE_NEXT: dict[str, int] = {}


def wrk_request(suite: Suite, scenario: Scenario, workdir: Path) -> list[str]:
    """wrk options for the method, body and Host header (invocations name the chute by host)."""
    options = []
    for name, value in invocation.host_header(suite, scenario).items():
        options += ["-H", f"{name}: {value}"]
    if scenario.uncached:
        assert suite.seeded is not None, "the database is not seeded"
        script = workdir / f"{scenario.name}.cycle.lua"
        ids = ",".join(f'"{chute_id}"' for chute_id in suite.seeded.chute_ids)
        prefix = scenario.path.removesuffix("{chute_id}")
        start = _CYCLE_NEXT.get(scenario.name, 0) % len(suite.seeded.chute_ids)
        script.write_text(CYCLE_WRK_SCRIPT % {"ids": ids, "prefix": prefix, "start": start})
        return [*options, "-s", str(script)]
    if scenario.method != "GET" or scenario.body is not None:
        script = workdir / f"{scenario.name}.request.lua"
        text = BODY_WRK_SCRIPT % {"method": scenario.method, "body": scenario.body or ""}
        if scenario.pace_ms is not None:
            text += PACE_WRK_SCRIPT % {"ms": scenario.pace_ms}
        script.write_text(text)
        options += ["-s", str(script)]
    return options


def wrk_auth(suite: Suite, scenario: Scenario, load: Load, workdir: Path) -> list[str]:
    """wrk options that authenticate every request as the scenario says."""
    if scenario.auth == "api_key":
        return ["-H", f"Authorization: {suite.credentials().api_key}"]
    if scenario.auth == "hotkey":
        sets = suite.credentials().signed("chutes", SIGNATURES_PER_SECOND * load.duration)
        signatures = workdir / f"{scenario.name}.signatures"
        signatures.write_text("".join(f"{h} {n} {s}\n" for h, n, s in sets))
        script = workdir / f"{scenario.name}.lua"
        script.write_text(SIGNED_WRK_SCRIPT % {"file": signatures, "path": suite.path_of(scenario)})
        return ["-s", str(script)]
    return []


def h2load_command(url: str, load: Load, data: Path, log: Path) -> list[str]:
    return [
        "h2load", f"-t{load.threads}", f"-c{load.connections}",
        "-m1",  # one stream per connection at a time: the same concurrency as wrk's -c
        f"-D{load.duration}", "-d", str(data), "--log-file", str(log),
        "-H", "content-type: application/grpc", "-H", "te: trailers", url,
    ]  # fmt: skip


def grpc_frame(message: bytes) -> bytes:
    """Length-prefixed gRPC message: flag 0 (uncompressed), 4-byte big-endian length, message."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def _loadgen_cpu_seconds(scenario: Scenario) -> float:
    # wrk and h2load are our children; a client measurement runs in this process.
    who = resource.RUSAGE_SELF if scenario.tool == "client" else resource.RUSAGE_CHILDREN
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def effective_load(scenario: Scenario, load: Load, warm_up: bool = False) -> Load:
    """The scenario's own concurrency and duration where it fixes them (the 1-connection rows,
    the 60-second records row; not for the 1-second warm-up)."""
    duration = scenario.duration if scenario.duration is not None and not warm_up else load.duration
    connections = load.connections if scenario.connections is None else scenario.connections
    return Load(duration, connections, min(load.threads, connections))


def client_run(suite: Suite, scenario: Scenario, warm_up: bool) -> Run:
    """A client measurement (invocation.py) as a Run: latency percentiles over its requests."""
    measured = invocation.measure(suite, scenario, warm_up)
    latencies = sorted(measured.latencies_ms)
    requests = len(latencies)
    return Run(
        requests=requests,
        rps=requests / measured.elapsed if measured.rate and measured.elapsed else None,
        p50_ms=_percentile(latencies, 0.50) if latencies else 0.0,
        p99_ms=_percentile(latencies, 0.99) if latencies else 0.0,
        non_2xx=measured.non_2xx,
        errors=measured.errors,
    )


def run_load(suite: Suite, scenario: Scenario, load: Load, workdir: Path, warm_up: bool = False) -> Run:
    """One measured run; CPU per request comes from /proc deltas around the load generator."""
    load = effective_load(scenario, load, warm_up)
    if scenario.client == "ingest":
        return ingest_run(suite, scenario, load)
    if scenario.tool == "client":
        before, loadgen_before = suite.snapshot(), _loadgen_cpu_seconds(scenario)
        run = client_run(suite, scenario, warm_up)
        after, loadgen_after = suite.snapshot(), _loadgen_cpu_seconds(scenario)
        _cpu_per_request(run, before, after, loadgen_after - loadgen_before)
        return run
    url = suite.scenario_url(scenario)
    log = workdir / f"{scenario.name}.log"
    if scenario.tool == "wrk":
        extra = [*wrk_request(suite, scenario, workdir), *wrk_auth(suite, scenario, load, workdir)]
        command = wrk_command(url, load, extra)
    else:
        assert scenario.grpc_request is not None
        data = workdir / f"{scenario.name}.grpc"
        data.write_bytes(grpc_frame(scenario.grpc_request()))
        command = h2load_command(url, load, data, log)
    accounting = records_accounting(suite) if scenario.records and not warm_up else None
    if accounting is not None:
        accounting.start()
    before, loadgen_before = suite.snapshot(), _loadgen_cpu_seconds(scenario)
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    after, loadgen_after = suite.snapshot(), _loadgen_cpu_seconds(scenario)
    if completed.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({completed.returncode}):\n{completed.stderr}")
    if scenario.tool == "wrk":
        run = parse_wrk(completed.stdout)
    else:
        run = parse_h2load(completed.stdout, log.read_text())
    if scenario.uncached:
        # wrk sent the completed requests and at most one more per connection: the next run
        # starts past them all (skipping a few chutes, never repeating a recent one).
        start = _CYCLE_NEXT.get(scenario.name, 0)
        _CYCLE_NEXT[scenario.name] = start + run.requests + 2 * load.connections
    _cpu_per_request(run, before, after, loadgen_after - loadgen_before)
    if accounting is not None:
        run.records = accounting.settle()
        calls, rows = run.records
        print(f"    records: {rows:,} rows of {calls:,} calls Envoy took (wrk counted {run.requests:,})")
    return run


def records_accounting(suite: Suite) -> records.Accounting:
    assert suite.chute is not None, "the echo chute is not deployed"
    admin = (suite.workdir / "data" / "envoy-admin-address").read_text().strip()
    return records.Accounting(suite.database_url(), admin, suite.chute.chute_id)


def ingest_run(suite: Suite, scenario: Scenario, load: Load) -> Run:
    """The pure-ingestion run (records.py): records per second from the first message sent to
    the last row written; CPU per record over the same span."""
    before, loadgen_before = suite.snapshot(), _loadgen_cpu_seconds(scenario)
    got = records.ingest(suite.database_url(), suite.addresses["metrics"], load.duration)
    after, loadgen_after = suite.snapshot(), _loadgen_cpu_seconds(scenario)
    print(
        f"    ingest: {got.sent:,} entries sent in {load.duration} s, {got.written:,} rows, the last"
        f" {got.lag * 1000:.0f} ms after the last message",
        flush=True,
    )  # fmt: skip
    run = Run(
        requests=got.sent, rps=got.sent / got.elapsed, p50_ms=0.0, p99_ms=0.0, non_2xx=0,
        errors=got.sent - got.written, records=(got.sent, got.written),
    )  # fmt: skip
    _cpu_per_request(run, before, after, loadgen_after - loadgen_before)
    return run


def _cpu_per_request(run: Run, before: dict[str, int], after: dict[str, int], loadgen_seconds: float) -> None:
    if run.requests:
        per_request = 1e6 / run.requests
        run.cpu_us = {name: (after[name] - before[name]) / CLOCK_TICKS * per_request for name in before}
        run.cpu_us["loadgen"] = loadgen_seconds * per_request
