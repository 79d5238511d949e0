"""Benchmark harness: starts a private `chutes-suite up`, loads it with wrk and h2load, records results.

Run from the repository root:

    .venv/bin/python bench/run.py [--duration 10] [--connections 16] [--repeat 3] [--only NAME]

Every scenario is a row of SCENARIOS; later work adds rows there. For each run the harness records
requests/s, p50/p99 latency, non-2xx responses and the CPU time per request of Envoy, of every
service process, of PostgreSQL and of the baseline server (from /proc/<pid>/stat), then writes the
medians over the repeats to the table in bench/README.md between the results markers and prints the
same table.

Scenarios that read chutes first seed the suite's database with --seed-chutes public chutes (once
per harness run). Baseline scenarios load bench/baselines/fastapi_chutes.py (FastAPI + SQLAlchemy ORM
+ asyncpg), which the harness starts on a free port against the same database, after seeding.

Exit codes: 0 ok, 1 the suite (or the baseline server) failed to start, 2 a load generator or the
baseline's packages are missing, or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import math
import os
import random
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
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

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
#: The FastAPI baseline of the registry's read paths; run.py starts it, it installs nothing.
BASELINE_APP = REPO / "bench" / "baselines" / "fastapi_chutes.py"
BASELINE_PACKAGES = ("fastapi", "uvicorn", "httptools")
BASELINE_INSTALL_HINT = ".venv/bin/pip install fastapi uvicorn httptools"
BASELINE_STARTUP_TIMEOUT_SECONDS = 30.0
#: How many public chutes the read scenarios run over, unless --seed-chutes says otherwise.
DEFAULT_SEED_CHUTES = 10_000

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


def tree_cpu_ticks(root: int) -> int:
    """CPU of a process and all its descendants, living or reaped, in clock ticks: PostgreSQL's
    backends are children of the postmaster, and an exited backend's time moves into the
    postmaster's cutime/cstime. One pass over /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
                ticks[int(entry.name)] = sum(int(fields[i]) for i in (11, 12, 13, 14))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += ticks.get(pid, 0)
        pending.extend(child for child, parent in parents.items() if parent == pid)
    return total


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
    """Envoy is "envoy", a service its name, the embedded database "postgres", or None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in argv if a]
    if args and Path(args[0]).name in ("envoy", "postgres"):
        return Path(args[0]).name
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
    user_id: str
    username: str

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
        made = json.loads(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)
        return cls(made["api_key"], public, private, hotkey, made["user_id"], made["username"])

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
    #: The embedded database's postmaster: measured with its backends, never killed by us (`up`
    #: stops it last).
    postgres_pid: int | None = None
    #: The FastAPI baseline, once a baseline scenario started it.
    baseline: BaselineServer | None = None
    #: The seeded chutes, once a read scenario asked for them.
    seeded: Seeded | None = None
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
            if name == "postgres":
                self.postgres_pid = pid
            elif name and started:
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

    def database_url(self) -> str:
        """The embedded database `up` started (it records the URL while it runs)."""
        return (self.workdir / "data" / "database_url").read_text().strip()

    def url(self, target: str, path: str) -> str:
        if target == "gateway":
            host_port = f"127.0.0.1:{self.gateway_port}"
        elif target == "baseline":
            assert self.baseline is not None, "the baseline server is not running"
            host_port = self.baseline.address
        else:
            host_port = self.addresses[target]
        return f"http://{host_port}{path}"

    def scenario_url(self, scenario: Scenario) -> str:
        return self.url(scenario.target, self.path_of(scenario))

    def path_of(self, scenario: Scenario) -> str:
        if not scenario.seeded:
            return scenario.path
        assert self.seeded is not None, "the database is not seeded"
        return scenario.path.format(chute_id=self.seeded.chute_id)

    def snapshot(self) -> dict[str, int]:
        ticks = {name: cpu_ticks(pid) for name, (pid, _) in self.pids.items()}
        if self.postgres_pid is not None:
            ticks["postgres"] = tree_cpu_ticks(self.postgres_pid)
        if self.baseline is not None:
            ticks["baseline"] = cpu_ticks(self.baseline.process.pid)
        return ticks


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


# --- seeded chutes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    count: int
    #: The chute GET scenarios read: the most invoked one (the list's first item).
    chute_id: str


SEED_SDK_VERSION = "0.6.9"
SEED_CODE = (
    "from chutes.chute import Chute, NodeSelector\n"
    "from chutes.image import Image\n\n"
    "chute = Chute(\n"
    '    username="{username}",\n'
    '    name="{name}",\n'
    '    image="{username}/bench-base:1.0",\n'
    "    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),\n"
    ")\n\n\n"
    '@chute.cord(public_api_path="/{function}", method="POST")\n'
    "async def {function}(self, text: str) -> str:\n"
    "    return text\n"
)
#: Selectors as deploy stores them (NodeSelector.stored()); each matches some GPUs.
SEED_SELECTORS = (
    {"gpu_count": 1, "min_vram_gb_per_gpu": 16, "max_hourly_price_per_gpu": None, "include": None,
     "exclude": ["b200", "mi300x"], "dynamic": False},
    {"gpu_count": 1, "min_vram_gb_per_gpu": 24, "max_hourly_price_per_gpu": None, "include": None,
     "exclude": None, "dynamic": False},
    {"gpu_count": 2, "min_vram_gb_per_gpu": 48, "max_hourly_price_per_gpu": None, "include": None,
     "exclude": ["mi300x"], "dynamic": False},
    {"gpu_count": 4, "min_vram_gb_per_gpu": 80, "max_hourly_price_per_gpu": None, "include": ["h100", "h200"],
     "exclude": None, "dynamic": False},
    {"gpu_count": 8, "min_vram_gb_per_gpu": 80, "max_hourly_price_per_gpu": 3.0, "include": None,
     "exclude": ["b200", "b300", "mi300x"], "dynamic": False},
)  # fmt: skip
SEED_FUNCTIONS = ("echo", "generate", "embed", "transcribe")
SEED_FAMILIES = ("echo", "llama", "qwen", "flux", "whisper", "mistral", "deepseek", "kokoro")


def _seed_cord(function: str) -> dict[str, Any]:
    """A cord as deploy stores it (the shape of tests/test_registry.py's deploy_body)."""
    return {
        "method": "POST", "path": f"/{function}", "public_api_path": f"/{function}",
        "public_api_method": "POST", "stream": False, "function": function, "passthrough": False,
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
                         "definitions": {}},
        "output_schema": {"type": "string"}, "output_content_type": "text/plain",
    }  # fmt: skip


def _uuid5(text: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


CHUTE_COLUMNS = (
    "chute_id", "user_id", "username", "name", "tagline", "readme", "tool_description", "image_id",
    "logo_id", "public", "standard_template", "cords", "jobs", "node_selector", "slug", "code", "filename",
    "ref_str", "version", "concurrency", "boost", "chutes_version", "revision", "openrouter", "discount",
    "max_instances", "scaling_threshold", "shutdown_after_seconds", "allow_external_egress",
    "encrypted_fs", "tee", "lock_modules", "immutable", "disabled", "invocation_count", "created_at",
    "updated_at",
)  # fmt: skip
INSTANCE_COLUMNS = ("instance_id", "chute_id", "version", "miner_hotkey", "region", "active", "verified",
                    "last_verified_at", "created_at", "updated_at")  # fmt: skip


def seed_rows(
    count: int, user_id: str, username: str, image_id: str, now: datetime.datetime
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], str]:
    """`count` public chutes as deploy writes them (plus instances for the busiest and some others),
    and the id of the most invoked chute. Deterministic: the same rows for the same owner."""
    rng = random.Random(4)
    chutes, instances, busiest = [], [], ("", -1)
    for index in range(count):
        name = f"bench-{SEED_FAMILIES[index % len(SEED_FAMILIES)]}-{index:05d}"
        function = SEED_FUNCTIONS[index % len(SEED_FUNCTIONS)]
        code = SEED_CODE.format(username=username, name=name, function=function)
        chute_id = _uuid5(f"{username}::chute::{name}")
        # Heavy-tailed like real usage; int32 in the API (registry.v1.Chute.invocation_count).
        invocations = min(int(rng.paretovariate(1.1) * 1_000) - 1_000, 2_000_000_000)
        created = now - datetime.timedelta(seconds=rng.randrange(365 * 86_400))
        updated = created + datetime.timedelta(
            seconds=rng.randrange(int((now - created).total_seconds()) + 1)
        )
        chutes.append((
            chute_id, user_id, username, name, f"Benchmark chute {index}: {function} over text",
            f"# {name}\n\nA seeded public chute for the read-path benchmarks: {function}.\n" * 3,
            None, image_id, None, True, None,
            json.dumps([_seed_cord(function)]), "[]", json.dumps(SEED_SELECTORS[index % len(SEED_SELECTORS)]),
            f"{username}-{name}", code, f"{name.replace('-', '_')}.py", f"{name.replace('-', '_')}:chute",
            _uuid5(f"{image_id}:initial:{code}"), rng.choice((None, 1, 8, 32)), None, SEED_SDK_VERSION,
            None, index % 50 == 0, 0.0, None, None, None, False, False, False, False, False, False,
            invocations, created, updated,
        ))  # fmt: skip
        busiest = max(busiest, (chute_id, invocations), key=lambda pair: pair[1])
        if invocations > 20_000 or rng.random() < 0.05:
            for number in range(rng.randint(1, 3)):
                verified = rng.random() < 0.8
                instances.append((
                    _uuid5(f"{chute_id}:instance:{number}"), chute_id, None, None,
                    rng.choice(("us-east", "eu-west", "ap-south")), True, verified,
                    updated if verified else None, updated, updated,
                ))  # fmt: skip
    return chutes, instances, busiest[0]


async def _seed(database_url: str, user_id: str, username: str, count: int) -> str:
    import asyncpg  # type: ignore[import-untyped]

    now = datetime.datetime.now(datetime.UTC)
    image_id = _uuid5(f"{username}/bench-base:1.0".lower())  # as services.registry.images.image_id_of
    chutes, instances, busiest = seed_rows(count, user_id, username, image_id, now)
    # The history trigger names its table unqualified, as the registry's own connections see it.
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "registry"})
    try:
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO registry.images (image_id, user_id, username, name, tag, public, status,"
                " chutes_version, patch_version, build_started_at, build_completed_at)"
                " VALUES ($1, $2, $3, 'bench-base', '1.0', true, 'built and pushed', $4, 'initial', $5, $5)",
                image_id, user_id, username, SEED_SDK_VERSION, now,
            )  # fmt: skip
            # COPY fires the history trigger too: one chute_history row per chute, as a deploy writes.
            await connection.copy_records_to_table(
                "chutes", schema_name="registry", columns=CHUTE_COLUMNS, records=chutes
            )
            await connection.copy_records_to_table(
                "instances", schema_name="registry", columns=INSTANCE_COLUMNS, records=instances
            )
        # Fresh statistics for the planner, and nothing left for autovacuum to do mid-measurement.
        await connection.execute(
            "VACUUM ANALYZE registry.images, registry.chutes, registry.instances, registry.chute_history"
        )
    finally:
        await connection.close()
    return busiest


def seed(suite: Suite, count: int) -> Seeded:
    """`count` public chutes of one user (the harness's own) with one public image, in one COPY."""
    started = time.monotonic()
    credentials = suite.credentials()
    chute_id = asyncio.run(_seed(suite.database_url(), credentials.user_id, credentials.username, count))
    print(f"seeded {count:,} public chutes in {time.monotonic() - started:.1f}s (GET reads {chute_id})")
    return Seeded(count, chute_id)


# --- the FastAPI baseline ------------------------------------------------------------------------


class BaselineMissing(Exception):
    pass


class BaselineFailed(Exception):
    def __init__(self, message: str, output_tail: str) -> None:
        super().__init__(message)
        self.output_tail = output_tail


@dataclass
class BaselineServer:
    process: subprocess.Popen[bytes]
    address: str
    log: Path


def require_baseline(scenarios: Sequence[Scenario]) -> None:
    if not any(s.target == "baseline" for s in scenarios):
        return
    missing = [name for name in BASELINE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise BaselineMissing(
            f"the FastAPI baseline needs {', '.join(missing)} (not a dependency of the suite)\n"
            f"install them with: {BASELINE_INSTALL_HINT}"
        )


@contextmanager
def running_baseline(suite: Suite) -> Iterator[BaselineServer]:
    """bench/baselines/fastapi_chutes.py on a free port against the suite's database, until exit."""
    port = free_ports(1)[0]
    log = suite.workdir / "baseline.log"
    command = [sys.executable, str(BASELINE_APP), "--database-url", suite.database_url(), "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )  # fmt: skip
    server = BaselineServer(process, f"127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + BASELINE_STARTUP_TIMEOUT_SECONDS
        while not _answers(f"http://{server.address}/chutes/?limit=1"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                raise BaselineFailed("the FastAPI baseline did not start", tail)
            time.sleep(0.1)
        print(f"baseline: FastAPI on http://{server.address} (pid {process.pid})", flush=True)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(SHUTDOWN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                print("warning: had to kill the baseline server", file=sys.stderr)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status) == 200
    except (OSError, urllib.error.HTTPError):
        return False


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
        script.write_text(_SIGNED_WRK_SCRIPT % {"file": signatures, "path": suite.path_of(scenario)})
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
    url = suite.scenario_url(scenario)
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


def probe(suite: Suite, scenario: Scenario) -> str:
    """Send one request and describe the answer (gRPC errors ride in trailers; h2load counts them as 2xx)."""
    url = suite.scenario_url(scenario)
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
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(suite.path_of(scenario))
            call(scenario.grpc_request(), timeout=5)
            return "grpc OK"
        except grpc.RpcError as error:
            return f"grpc {error.code().name}"


# --- results -------------------------------------------------------------------------------------

HEADER = (
    "| scenario | req/s median | p50 ms | p99 ms | non-2xx | Envoy µs/req | service µs/req"
    " | Postgres µs/req | whole stack µs/req | date | command |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
)
#: Rows written before the Postgres column existed have this many cells; merge_rows pads them.
_CELLS_WITHOUT_POSTGRES = 10


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
        cpu("postgres"),
        # Envoy, every service, the database and the baseline server: what the request cost,
        # wherever the work happened.
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
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            if len(cells) == _CELLS_WITHOUT_POSTGRES:  # an older row: no Postgres measurement
                cells.insert(7, "-")
                line = "| " + " | ".join(cells) + " |"
            rows[cells[0]] = line
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
    if scenario.pair is not None:
        check_same_json(suite, scenario)
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
    parser.add_argument(
        "--seed-chutes", type=int, default=DEFAULT_SEED_CHUTES, metavar="N",
        help=f"public chutes seeded for the chute-reading scenarios (default {DEFAULT_SEED_CHUTES:,})",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print, leave bench/README.md alone")
    args = parser.parse_args(argv)
    if min(args.duration, args.repeat, args.threads, args.seed_chutes) < 1 or args.connections < args.threads:
        parser.error("duration, repeat, threads and seed-chutes must be >= 1, and connections >= threads")
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
        require_baseline(scenarios)
    except (ToolMissing, BaselineMissing) as missing:
        print(missing, file=sys.stderr)
        return 2
    warn_if_busy()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    results = []
    with tempfile.TemporaryDirectory(prefix="chutes-bench-load-") as loads:
        try:
            with running_suite() as suite, ExitStack() as baseline:
                for scenario in scenarios:
                    if scenario.seeded and suite.seeded is None:
                        suite.seeded = seed(suite, args.seed_chutes)
                    if scenario.target == "baseline" and suite.baseline is None:
                        suite.baseline = baseline.enter_context(running_baseline(suite))
                    results.append(bench_scenario(suite, scenario, load, args.repeat, Path(loads)))
        except SuiteFailed as failure:
            tail = f"--- chutes-suite up stderr (tail) ---\n{failure.stderr_tail}"
            print(f"the suite failed to start: {failure}\n{tail}", file=sys.stderr)
            return 1
        except BaselineFailed as failure:
            print(f"{failure}\n--- baseline output (tail) ---\n{failure.output_tail}", file=sys.stderr)
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
