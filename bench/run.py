"""Benchmark harness: starts a private `chutes-suite up`, loads it with wrk and h2load, records results.

Run from the repository root:

    .venv/bin/python bench/run.py [--duration 10] [--connections 16] [--repeat 3] [--only NAME]

Every scenario is a row of SCENARIOS; later work adds rows there. For each run the harness records
requests/s, p50/p99 latency, non-2xx responses and the CPU time per request of Envoy and of every
service process (from /proc/<pid>/stat), then writes the medians over the repeats to the table
in bench/README.md between the results markers and prints the same table.

Exit codes: 0 ok, 1 the suite failed to start, 2 a load generator is missing or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

import grpc

REPO = Path(__file__).resolve().parent.parent
README = REPO / "bench" / "README.md"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"
#: Same list as services.kit.settings.SERVICE_NAMES; copied so the harness imports nothing of the suite
#: except the generated protobuf messages.
SERVICES = ("identity", "registry", "jobs", "attestation", "metrics")
#: `up` gives itself 60 s; first start also runs initdb and migrations, so allow more before giving up.
STARTUP_TIMEOUT_SECONDS = 120.0
#: `up` waits up to shutdown grace (10 s) + 5 s per child; this covers it with margin.
SHUTDOWN_TIMEOUT_SECONDS = 60.0
INSTALL_HINT = "apt-get update && apt-get install -y wrk nghttp2-client"
TOOL_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client"}
#: Above this 1-minute load average before we start, something else is using the CPU we measure.
BUSY_LOAD_AVERAGE = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

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
    #: Where the load goes: "gateway" or a service name (its own port, bypassing Envoy).
    target: str
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


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "envoy-direct", "wrk", "gateway", "/__bench/direct", None,
        "Envoy's own ceiling: a direct_response route, no filters, no upstream",
    ),
    Scenario(
        "rest-getchute-501", "wrk", "gateway", "/chutes/abc", "registry",
        "REST GET through Lua + transcoder + registry (UNIMPLEMENTED today, so 501 JSON)",
    ),
    Scenario(
        "rest-getchute-501-api-key", "wrk", "gateway", "/chutes/abc", "registry",
        "the same GET with an admin API key (verified in registry, cached for 4 s)", auth="api_key",
    ),
    Scenario(
        "rest-getchute-501-hotkey", "wrk", "gateway", "/chutes/abc", "registry",
        "the same GET, hotkey-signed (ext_authz: identity checks sr25519 and the replay store)",
        auth="hotkey",
    ),
    Scenario(
        "grpc-getchute-501", "h2load", "registry", GET_CHUTE, "registry",
        "native gRPC GetChute straight to the registry port (no Envoy)", _get_chute_request,
    ),
    Scenario(
        "grpc-gateway-getchute-501", "h2load", "gateway", GET_CHUTE, "registry",
        "native gRPC GetChute through the gateway port (Envoy routes by prefix)", _get_chute_request,
    ),
)  # fmt: skip


@dataclass
class Run:
    """One load-generator run."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    #: Connection/stream failures (wrk socket errors, h2load failed+errored+timeout).
    errors: int
    #: Process name -> CPU µs per completed request ("loadgen" is wrk/h2load itself).
    cpu_us: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    scenario: Scenario
    runs: list[Run]
    #: What one request answers (e.g. "HTTP 501", "grpc UNIMPLEMENTED"): non-2xx alone hides gRPC errors.
    probe: str


class SuiteFailed(Exception):
    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


class ToolMissing(Exception):
    pass


# --- processes -----------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    # Hold every socket until all are bound, so the ports are distinct.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces and parentheses)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of the process, in clock ticks (0 once it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def children_of(parent: int) -> list[int]:
    """Direct children, as `pgrep -P` finds them, without depending on procps or psutil."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def process_name(pid: int) -> str | None:
    """Envoy is "envoy", a service its name, or None for anything else (postgres)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in argv if a]
    if args and Path(args[0]).name == "envoy":
        return "envoy"
    if "-m" in args[:-1]:
        module = args[args.index("-m") + 1]
        if module.startswith("services."):
            return module.removeprefix("services.")
    return None


@dataclass(frozen=True)
class Credentials:
    api_key: str
    public_key: bytes
    private_key: bytes
    hotkey: str

    @classmethod
    def create(cls, env: dict[str, str]) -> Credentials:
        import sr25519

        from services.identity.signatures import ss58_of

        public, private = sr25519.pair_from_seed(os.urandom(32))
        hotkey = ss58_of(public)
        command = [
            str(Path(sys.executable).parent / "chutes-suite"),
            "admin",
            "create-user",
            "--username",
            "bench" + os.urandom(4).hex(),
            "--hotkey",
            hotkey,
        ]
        made = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        return cls(json.loads(made.stdout)["api_key"], public, private, hotkey)

    def signed(self, purpose: str, count: int) -> list[tuple[str, str, str]]:
        """`count` fresh (hotkey, nonce, signature) triples over `hotkey:nonce:purpose`."""
        import sr25519

        nonce = str(int(time.time()))
        message = f"{self.hotkey}:{nonce}:{purpose}".encode()
        pair = (self.public_key, self.private_key)
        # sr25519 signatures are randomized: the same message signs differently every time.
        return [(self.hotkey, nonce, sr25519.sign(pair, message).hex()) for _ in range(count)]


#: Hotkey scenarios pre-sign this many requests per second of load (well above what 2 cores serve).
SIGNATURES_PER_SECOND = 8_000

#: A wrk script that sends each pre-signed header set once, in order.
_SIGNED_WRK_SCRIPT = """
local sets = {}
for line in io.lines("%(file)s") do sets[#sets + 1] = line end
local next_set = 0
request = function()
  next_set = next_set %% #sets + 1
  local hotkey, nonce, signature = sets[next_set]:match("(%%S+) (%%S+) (%%S+)")
  return wrk.format("GET", "%(path)s", {["X-Chutes-Hotkey"] = hotkey, ["X-Chutes-Nonce"] = nonce,
                                       ["X-Chutes-Signature"] = signature})
end
"""


@dataclass
class Suite:
    """A private `chutes-suite up` on free ports and a temp data dir, so it never meets a running suite."""

    workdir: Path
    gateway_port: int
    addresses: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    #: name -> (pid, start time): the start time guards against killing a reused pid.
    pids: dict[str, tuple[int, str]] = field(default_factory=dict)
    _credentials: Credentials | None = None

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "up.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "up.stderr"

    def environment(self) -> dict[str, str]:
        # Inherited CHUTES_* (e.g. CHUTES_DATABASE_URL of a dev shell) would point at someone else's suite.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
        env.update(
            CHUTES_DATA_DIR=str(self.workdir / "data"),
            CHUTES_GATEWAY_PORT=str(self.gateway_port),
            CHUTES_GATEWAY_BENCH_ROUTE="1",
        )
        for name, address in self.addresses.items():
            env[f"CHUTES_{name.upper()}_ADDRESS"] = address

        return env

    def start(self) -> None:
        command = [str(Path(sys.executable).parent / "chutes-suite"), "up"]
        # Output goes to files, not pipes: every child inherits them, and a pipe nobody drains would
        # eventually block a logging service mid-benchmark.
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=self.environment(), stdout=out, stderr=err,
                # Own session: a Ctrl-C on the terminal reaches only us, and we stop the suite in order.
                start_new_session=True,
            )  # fmt: skip
        self._wait_ready()
        for pid in children_of(self.process.pid):
            name, started = process_name(pid), _start_time(pid)
            if name and started:
                self.pids[name] = (pid, started)
        missing = {"envoy", *SERVICES} - set(self.pids)
        if missing:
            raise SuiteFailed(f"suite is up but these processes were not found: {sorted(missing)}")

    def _wait_ready(self) -> None:
        assert self.process is not None
        expected = f"gateway: http://127.0.0.1:{self.gateway_port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while expected not in self.stdout_path.read_text(errors="replace"):
            code = self.process.poll()
            if code is not None:
                raise SuiteFailed(f"chutes-suite up exited with code {code} before it was ready")
            if time.monotonic() > deadline:
                raise SuiteFailed(f"no '{expected}' line after {STARTUP_TIMEOUT_SECONDS:.0f}s")
            time.sleep(0.1)

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no stderr captured)"

    def stop(self) -> list[str]:
        """SIGTERM `up` (it stops its children in order) and wait. Returns what had to be killed."""
        if self.process is None:
            return []
        killed = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(SHUTDOWN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                killed.append("chutes-suite up")
        for name, (pid, started) in self.pids.items():
            if _start_time(pid) == started:  # still the very process `up` started: it was left behind
                os.kill(pid, signal.SIGKILL)
                killed.append(f"{name} (pid {pid})")
        return killed

    def credentials(self) -> Credentials:
        """A user of this suite with an admin API key and a hotkey (made once, on first use)."""
        if self._credentials is None:
            self._credentials = Credentials.create(self.environment())
        return self._credentials

    def url(self, target: str, path: str) -> str:
        host_port = f"127.0.0.1:{self.gateway_port}" if target == "gateway" else self.addresses[target]
        return f"http://{host_port}{path}"

    def snapshot(self) -> dict[str, int]:
        return {name: cpu_ticks(pid) for name, (pid, _) in self.pids.items()}


@contextmanager
def running_suite() -> Iterator[Suite]:
    workdir = Path(tempfile.mkdtemp(prefix="chutes-bench-"))
    ports = free_ports(2 + len(SERVICES))
    names = (*SERVICES, "identity_authz")  # identity's signature-check endpoint has an address too
    addresses = {name: f"127.0.0.1:{port}" for name, port in zip(names, ports[1:], strict=True)}
    suite = Suite(workdir, ports[0], addresses)
    try:
        print(f"starting chutes-suite up (gateway port {suite.gateway_port}, data {workdir})", flush=True)
        suite.start()
        yield suite
    except SuiteFailed as failure:
        suite.stop()  # first, so the tail also holds up's own account of what went wrong
        raise SuiteFailed(str(failure), suite.stderr_tail()) from None
    finally:
        killed = suite.stop()
        if killed:
            print(f"warning: had to kill {', '.join(killed)}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)


# --- load generators -----------------------------------------------------------------------------

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
    latencies = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
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


def wrk_auth(suite: Suite, scenario: Scenario, load: Load, workdir: Path) -> list[str]:
    """wrk options that authenticate every request as the scenario says."""
    if scenario.auth == "api_key":
        return ["-H", f"Authorization: {suite.credentials().api_key}"]
    if scenario.auth == "hotkey":
        sets = suite.credentials().signed("chutes", SIGNATURES_PER_SECOND * load.duration)
        signatures = workdir / f"{scenario.name}.signatures"
        signatures.write_text("".join(f"{h} {n} {s}\n" for h, n, s in sets))
        script = workdir / f"{scenario.name}.lua"
        script.write_text(_SIGNED_WRK_SCRIPT % {"file": signatures, "path": scenario.path})
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


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(suite: Suite, scenario: Scenario, load: Load, workdir: Path) -> Run:
    """One measured run; CPU per request comes from /proc deltas around the load generator."""
    url = suite.url(scenario.target, scenario.path)
    log = workdir / f"{scenario.name}.log"
    if scenario.tool == "wrk":
        command = wrk_command(url, load, wrk_auth(suite, scenario, load, workdir))
    else:
        assert scenario.grpc_request is not None
        data = workdir / f"{scenario.name}.grpc"
        data.write_bytes(grpc_frame(scenario.grpc_request()))
        command = h2load_command(url, load, data, log)
    before, loadgen_before = suite.snapshot(), _children_cpu_seconds()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    after, loadgen_after = suite.snapshot(), _children_cpu_seconds()
    if completed.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({completed.returncode}):\n{completed.stderr}")
    if scenario.tool == "wrk":
        run = parse_wrk(completed.stdout)
    else:
        run = parse_h2load(completed.stdout, log.read_text())
    if run.requests:
        per_request = 1e6 / run.requests
        run.cpu_us = {name: (after[name] - before[name]) / CLOCK_TICKS * per_request for name in before}
        run.cpu_us["loadgen"] = (loadgen_after - loadgen_before) * per_request
    return run


def probe(suite: Suite, scenario: Scenario) -> str:
    """Send one request and describe the answer (gRPC errors ride in trailers; h2load counts them as 2xx)."""
    url = suite.url(scenario.target, scenario.path)
    if scenario.grpc_request is None:
        headers = {}
        if scenario.auth == "api_key":
            headers["Authorization"] = suite.credentials().api_key
        elif scenario.auth == "hotkey":
            hotkey, nonce, signature = suite.credentials().signed("chutes", 1)[0]
            headers = {"X-Chutes-Hotkey": hotkey, "X-Chutes-Nonce": nonce, "X-Chutes-Signature": signature}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as reply:
                return f"HTTP {reply.status}"
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"
    target = url.removeprefix("http://").split("/", 1)[0]
    with grpc.insecure_channel(target) as channel:
        try:
            # No serializers: the message goes as the bytes we already have, and the reply is not parsed.
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(scenario.path)
            call(scenario.grpc_request(), timeout=5)
            return "grpc OK"
        except grpc.RpcError as error:
            return f"grpc {error.code().name}"


# --- results -------------------------------------------------------------------------------------

HEADER = (
    "| scenario | req/s median | p50 ms | p99 ms | non-2xx | Envoy µs/req | service µs/req"
    " | whole stack µs/req | date | command |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def table_row(result: Result, command: str, date: str) -> str:
    runs, serving = result.runs, result.scenario.serving

    def cpu(name: str | None) -> str:
        return "-" if name is None else f"{_median([r.cpu_us.get(name, 0.0) for r in runs]):.0f}"

    non_2xx = f"{_median([r.non_2xx for r in runs]):,.0f}"
    if result.probe not in ("HTTP 200", "grpc OK"):
        non_2xx += f" (each: {result.probe})"
    cells = [
        result.scenario.name,
        f"{_median([r.rps for r in runs]):,.0f}",
        f"{_median([r.p50_ms for r in runs]):.2f}",
        f"{_median([r.p99_ms for r in runs]):.2f}",
        non_2xx,
        cpu("envoy"),
        cpu(serving) if serving is None else f"{cpu(serving)} ({serving})",
        # Envoy and every service: what the request cost the suite, wherever it was spent.
        f"{_median([sum(v for k, v in r.cpu_us.items() if k != 'loadgen') for r in runs]):.0f}",
        date,
        f"`{command}`",
    ]
    return "| " + " | ".join(cells) + " |"


def merge_rows(old_block: str, new_rows: dict[str, str]) -> list[str]:
    """Rows of the new table: fresh rows replace old ones by scenario; rows of scenarios not run stay."""
    rows: dict[str, str] = {}
    for line in old_block.splitlines():
        if line.startswith("|") and not line.startswith(("| scenario ", "|---")):
            rows[line.split("|")[1].strip()] = line
    rows.update(new_rows)
    order = [s.name for s in SCENARIOS]
    return sorted(rows.values(), key=lambda row: _order_of(row, order))


def _order_of(row: str, order: list[str]) -> int:
    name = row.split("|")[1].strip()
    return order.index(name) if name in order else len(order)


def write_readme(rows: list[str]) -> None:
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{RESULTS_START}\n{RESULTS_END}\n"
    head, start, rest = text.partition(RESULTS_START)
    _, end, tail = rest.partition(RESULTS_END)
    if not start or not end:
        raise SystemExit(f"{README}: markers {RESULTS_START} / {RESULTS_END} not found; not touching it")
    block = "\n".join([*HEADER, *rows])
    README.write_text(f"{head}{RESULTS_START}\n{block}\n{RESULTS_END}{tail}")


def existing_block() -> str:
    if not README.exists():
        return ""
    return README.read_text().partition(RESULTS_START)[2].partition(RESULTS_END)[0]


def describe(run: Run, index: int, repeat: int) -> str:
    cpu = " ".join(f"{name} {us:.0f}" for name, us in sorted(run.cpu_us.items()) if us >= 0.5)
    return (
        f"  run {index}/{repeat}: {run.rps:,.0f} req/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
        f"{run.requests:,} requests, non-2xx {run.non_2xx:,}, errors {run.errors:,} | CPU µs/req: {cpu}"
    )


# --- main ----------------------------------------------------------------------------------------


def require_tools(scenarios: Sequence[Scenario]) -> None:
    missing = sorted({s.tool for s in scenarios if shutil.which(s.tool) is None})
    if missing:
        which = ", ".join(f"{tool} (apt package {TOOL_PACKAGES[tool]})" for tool in missing)
        raise ToolMissing(f"missing load generator(s): {which}\ninstall them with: {INSTALL_HINT}")


def warn_if_busy() -> None:
    # Load generator, Envoy and Python already share the cores; a fourth party skews every ratio.
    load = os.getloadavg()[0]
    if load > BUSY_LOAD_AVERAGE:
        print(f"warning: 1-minute load average is {load:.2f} before starting; results will be noisy")


def bench_scenario(suite: Suite, scenario: Scenario, load: Load, repeat: int, workdir: Path) -> Result:
    print(f"{scenario.name}: {scenario.what}", flush=True)
    answer = probe(suite, scenario)
    # Warm-up, not recorded: first calls pay for connection setup, lazy imports and Envoy's upstream pool.
    run_load(suite, scenario, Load(1, load.connections, load.threads), workdir)
    runs = []
    for index in range(1, repeat + 1):
        runs.append(run_load(suite, scenario, load, workdir))
        print(describe(runs[-1], index, repeat), flush=True)
    return Result(scenario, runs, answer)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="load generator threads (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario; the median is reported")
    parser.add_argument(
        "--only", action="append", metavar="NAME", choices=[s.name for s in SCENARIOS],
        help="run only this scenario (repeatable)",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print, leave bench/README.md alone")
    args = parser.parse_args(argv)
    if min(args.duration, args.repeat, args.threads) < 1 or args.connections < args.threads:
        parser.error("duration, repeat and threads must be >= 1, and connections >= threads")
    return args


def _stop_on_sigterm(signum: int, _frame: object) -> NoReturn:
    # Turn SIGTERM into an exception so the finally blocks stop the suite.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only]
    command = shlex.join([".venv/bin/python", "bench/run.py", *argv])
    load = Load(args.duration, args.connections, args.threads)
    try:
        require_tools(scenarios)
    except ToolMissing as missing:
        print(missing, file=sys.stderr)
        return 2
    warn_if_busy()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    results = []
    with tempfile.TemporaryDirectory(prefix="chutes-bench-load-") as loads:
        try:
            with running_suite() as suite:
                for scenario in scenarios:
                    results.append(bench_scenario(suite, scenario, load, args.repeat, Path(loads)))
        except SuiteFailed as failure:
            tail = f"--- chutes-suite up stderr (tail) ---\n{failure.stderr_tail}"
            print(f"the suite failed to start: {failure}\n{tail}", file=sys.stderr)
            return 1
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    rows = {r.scenario.name: table_row(r, command, date) for r in results}
    print("\n" + "\n".join([*HEADER, *rows.values()]))
    if not args.no_write:
        write_readme(merge_rows(existing_block(), rows))
        print(f"\nupdated {README.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # the suite is already stopped by then; spare the traceback
        sys.exit(130)
