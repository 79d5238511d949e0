"""The echo chute the invocation scenarios call, and the measurements wrk cannot make.

`prepare` (once per harness run, before the first invocation scenario): the harness's user gets an
image (`chutes-suite admin add-image`), deploys examples/echo_chute.py over REST as `chutes deploy`
0.6.9 does (the body of tests/test_runtime.py's `deploy_echo`), warms it up with
`GET /chutes/warmup/{chute_id}` (SSE until `hot`) and finds its instance: host and port in
`registry.instances`, the pid in the miner's `{data}/miner/instances/{instance_id}/pid`. The suite
runs `up`'s local miner for this (a simulated inventory, suite.LOCAL_MINER_GPUS).

The chute is deployed with `concurrency` >= the connections of the load (16): Envoy allows at most
`concurrency` calls per instance and queues the rest, so with the example's 4 the gateway rows
would measure that cap rather than the hop.

Client measurements (tool "client"), each returning a Measured that load.run_load turns into a Run:
- "sse": sequential POST /count {"to": 3} on one keep-alive connection (straight to the instance or
  through the gateway), the time from sending the request to the end of the first SSE event;
- "warmup": a fresh copy of the chute deployed, GET /chutes/warmup/{id} timed from sending it to
  the `hot` frame, the copy deleted (and its instance gone) before the next;
- "routable": a fresh copy wanted (`?quick=true`), its instance's port watched, then the gateway
  polled with POST /echo every POLL_SECONDS; the time from the registry recording READY (the row's
  `last_verified_at`, set by the ReportInstance that follows the miner's passed probe) to the
  first 200 through the gateway.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import REPO

if TYPE_CHECKING:
    from .scenarios import Scenario
    from .suite import Suite

#: The SDK version `chutes deploy` announces (the registry checks it against the image's).
SDK_VERSION = "0.6.9"
ECHO_CODE_PATH = REPO / "examples" / "echo_chute.py"
ECHO_CORDS = [
    {"method": "POST", "path": f"/{name}", "public_api_path": f"/{name}", "public_api_method": "POST",
     "stream": name == "count", "function": name}
    for name in ("echo", "count")
]  # fmt: skip
IMAGE_NAME, IMAGE_TAG = "base", "1.0"
#: The chute's host is `{slug}.{CHUTES_CHUTE_DOMAIN}`; the harness leaves the domain at its default.
CHUTE_DOMAIN = "localhost"
#: At least this concurrency for the measured chute (see the module docstring).
MIN_CONCURRENCY = 16

SSE_REQUESTS = 50
SSE_WARM_UP_REQUESTS = 5
COLD_STARTS = 5
#: The routable scenario's gateway poll interval (its resolution, with one request's latency).
POLL_SECONDS = 0.002
WARMUP_TIMEOUT_SECONDS = 120.0
GONE_TIMEOUT_SECONDS = 60.0
#: Only these clients get an unrecorded warm-up run: the cold-start ones had theirs in prepare().
WARMS_UP = ("sse", "ingest")


@dataclass(frozen=True)
class EchoChute:
    chute_id: str
    slug: str
    instance_id: str
    #: host:port of the instance, as the miner reported it.
    address: str
    pid: int
    #: How long prepare()'s warmup took (the suite's first cold start).
    warmup_seconds: float


@dataclass
class Measured:
    """What a client measurement saw: one latency per successful request (ms)."""

    latencies_ms: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0
    elapsed: float = 0.0
    #: Whether requests per second mean anything (not for cold starts).
    rate: bool = True


# ---- REST as the harness's user ----------------------------------------------------------------


def _headers(suite: Suite, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": suite.credentials().api_key, **(extra or {})}


def _rest(suite: Suite, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = _headers(suite, {"Content-Type": "application/json", "X-Chutes-Version": SDK_VERSION})
    request = urllib.request.Request(suite.url("gateway", path), data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{method} {path}: HTTP {error.code}: {error.read()[:500]!r}") from None


def add_image(suite: Suite) -> str:
    """The harness's user's image, as tests/test_runtime.py's owner gets it."""
    credentials = suite.credentials()
    command = [
        str(Path(sys.executable).parent / "chutes-suite"), "admin", "add-image", "--username",
        credentials.username, "--name", IMAGE_NAME, "--tag", IMAGE_TAG, "--chutes-version", SDK_VERSION,
    ]  # fmt: skip
    subprocess.run(command, env=suite.environment(), capture_output=True, text=True, check=True)
    return f"{credentials.username}/{IMAGE_NAME}:{IMAGE_TAG}"


def deploy_body(name: str, image: str, concurrency: int) -> dict[str, Any]:
    """What `chutes deploy` 0.6.9 sends for examples/echo_chute.py (tests/test_registry.py's
    `deploy_body` with the echo cords, as tests/test_runtime.py's `deploy_echo`)."""
    return {
        "name": name, "tagline": "echo", "readme": "Echoes its input.", "logo_id": None, "image": image,
        "public": False, "standard_template": None,
        "node_selector": {"gpu_count": 1, "min_vram_gb_per_gpu": 16, "max_hourly_price_per_gpu": None,
                          "include": None, "exclude": None},
        "filename": "echo_chute.py", "ref_str": "echo_chute:chute", "code": ECHO_CODE_PATH.read_text(),
        "concurrency": concurrency, "max_instances": 1, "scaling_threshold": 0.75,
        "shutdown_after_seconds": 300, "allow_external_egress": False, "encrypted_fs": False,
        "tee": False, "lock_modules": None, "revision": None, "cords": ECHO_CORDS, "jobs": [],
    }  # fmt: skip


def deploy(suite: Suite, name: str, image: str, concurrency: int) -> tuple[str, str]:
    """Deploy a copy of the echo chute; (chute_id, slug)."""
    chute = _rest(suite, "POST", "/chutes/?accept_fee=true", deploy_body(name, image, concurrency))
    return str(chute["chute_id"]), str(chute["slug"])


def warm(suite: Suite, chute_id: str) -> float:
    """GET /chutes/warmup/{chute_id} until the `hot` frame: seconds from sending it."""
    url = suite.url("gateway", f"/chutes/warmup/{chute_id}")
    started = time.perf_counter()
    request = urllib.request.Request(url, headers=_headers(suite))
    with urllib.request.urlopen(request, timeout=WARMUP_TIMEOUT_SECONDS) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data:") and json.loads(line[5:]).get("status") == "hot":
                return time.perf_counter() - started
    raise RuntimeError(f"warmup of {chute_id}: the stream ended without `hot`")


def delete(suite: Suite, chute_id: str) -> None:
    """Delete a copy and wait until its instance is gone (so the next cold start has the node alone)."""
    _rest(suite, "DELETE", f"/chutes/{chute_id}")
    with database(suite) as db:
        deadline = time.monotonic() + GONE_TIMEOUT_SECONDS
        while db.fetchval("SELECT count(*) FROM registry.instances WHERE chute_id = $1", chute_id):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the instance of deleted chute {chute_id} is still there")
            time.sleep(0.1)


# ---- the database, synchronously ---------------------------------------------------------------


class Database:
    """One asyncpg connection driven from synchronous code (polling needs no new connection each time)."""

    def __init__(self, url: str) -> None:
        import asyncpg

        self.loop = asyncio.new_event_loop()
        self.connection = self.loop.run_until_complete(asyncpg.connect(url))

    def fetchrow(self, query: str, *args: Any) -> Any:
        return self.loop.run_until_complete(self.connection.fetchrow(query, *args))

    def fetchval(self, query: str, *args: Any) -> Any:
        return self.loop.run_until_complete(self.connection.fetchval(query, *args))

    def close(self) -> None:
        self.loop.run_until_complete(self.connection.close())
        self.loop.close()


@contextmanager
def database(suite: Suite) -> Iterator[Database]:
    db = Database(suite.database_url())
    try:
        yield db
    finally:
        db.close()


def _instance(db: Database, chute_id: str) -> Any:
    return db.fetchrow(
        "SELECT instance_id, host, port, state, last_verified_at FROM registry.instances WHERE chute_id = $1",
        chute_id,
    )


# ---- the measured chute -------------------------------------------------------------------------


def concurrency_for(connections: int) -> int:
    return min(256, max(MIN_CONCURRENCY, connections))


def prepare(suite: Suite, connections: int) -> EchoChute:
    """Deploy the echo chute, warm it up, find its instance."""
    image = add_image(suite)
    suite.image = image
    chute_id, slug = deploy(suite, "bench-echo", image, concurrency_for(connections))
    seconds = warm(suite, chute_id)
    with database(suite) as db:
        row = _instance(db, chute_id)
    if row is None or row["state"] != "ready":
        raise RuntimeError(f"chute {chute_id} is hot but has no ready instance: {row}")
    pid_file = suite.workdir / "data" / "miner" / "instances" / row["instance_id"] / "pid"
    chute = EchoChute(
        chute_id, slug, row["instance_id"], f"{row['host']}:{row['port']}", int(pid_file.read_text()), seconds
    )
    print(
        f"echo chute {slug} ({chute_id}): hot after {seconds:.2f} s, instance {chute.instance_id} on "
        f"{chute.address} (pid {chute.pid}), concurrency {concurrency_for(connections)}",
        flush=True,
    )
    return chute


def host_header(suite: Suite, scenario: Scenario) -> dict[str, str]:
    """Invocations through the gateway name the chute by host (and so does what Envoy asks the
    registry's invocation check)."""
    if scenario.invocation and scenario.target in ("gateway", "registry_authz"):
        assert suite.chute is not None
        return {"Host": f"{suite.chute.slug}.{CHUTE_DOMAIN}"}
    return {}


# ---- client measurements ------------------------------------------------------------------------


def measure(suite: Suite, scenario: Scenario, warm_up: bool) -> Measured:
    if scenario.client == "sse":
        return sse_first_events(suite, scenario, SSE_WARM_UP_REQUESTS if warm_up else SSE_REQUESTS)
    if scenario.client == "warmup":
        return warmups(suite, COLD_STARTS)
    if scenario.client == "routable":
        return routable_after_probe(suite, scenario, COLD_STARTS)
    raise ValueError(f"{scenario.name}: no client measurement {scenario.client!r}")


def sse_first_events(suite: Suite, scenario: Scenario, count: int) -> Measured:
    """`count` sequential streaming calls on one keep-alive connection; ms to the first whole event."""
    target = urllib.parse.urlsplit(suite.scenario_url(scenario))
    assert scenario.body is not None and target.hostname is not None
    headers = {"Content-Type": "application/json", **host_header(suite, scenario)}
    if scenario.auth == "api_key":
        headers["Authorization"] = suite.credentials().api_key
    body = scenario.body.encode()
    measured = Measured()
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    started = time.perf_counter()
    try:
        for _ in range(count):
            sent = time.perf_counter()
            connection.request("POST", target.path, body, headers)
            reply = connection.getresponse()
            if reply.status != 200:
                reply.read()
                measured.non_2xx += 1
                continue
            received = b""
            while b"\n\n" not in received:
                chunk = reply.read1(65536)
                if not chunk:
                    break
                received += chunk
            first = time.perf_counter() - sent
            received += reply.read()
            if received.count(b"data:") != 3 or b"\n\n" not in received:
                measured.errors += 1
                continue
            measured.latencies_ms.append(first * 1000)
    finally:
        connection.close()
    measured.elapsed = time.perf_counter() - started
    return measured


def warmups(suite: Suite, count: int) -> Measured:
    """`count` cold starts of fresh copies: ms from sending the warmup request to `hot`."""
    assert suite.image is not None and suite.chute is not None
    measured = Measured(rate=False)
    started = time.perf_counter()
    for index in range(count):
        chute_id, _ = deploy(suite, f"bench-warm-{os.urandom(3).hex()}", suite.image, MIN_CONCURRENCY)
        try:
            seconds = warm(suite, chute_id)
            measured.latencies_ms.append(seconds * 1000)
            print(f"    cold start {index + 1}/{count}: hot after {seconds:.3f} s", flush=True)
        except (OSError, RuntimeError) as failure:
            measured.errors += 1
            print(f"    cold start {index + 1}/{count}: {failure}", flush=True)
        finally:
            delete(suite, chute_id)
    measured.elapsed = time.perf_counter() - started
    return measured


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _miner_logged_ready(suite: Suite, instance_id: str) -> float | None:
    """When the miner logged `instance X: READY` (after the registry answered its report), epoch s."""
    logged = re.search(
        rf"^(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}}) miner: instance {re.escape(instance_id)}: READY$",
        suite.stderr_path.read_text(errors="replace"),
        re.MULTILINE,
    )
    if logged is None:
        return None
    # asctime is local time, as is the naive datetime strptime makes of it.
    return datetime.datetime.strptime(logged[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def routable_after_probe(suite: Suite, scenario: Scenario, count: int) -> Measured:
    """`count` cold starts of fresh copies: ms from the registry recording READY to the first 200."""
    assert suite.image is not None and scenario.body is not None
    measured = Measured(rate=False)
    gateway = http.client.HTTPConnection("127.0.0.1", suite.gateway_port, timeout=10)
    body = scenario.body.encode()
    started = time.perf_counter()
    with database(suite) as db:
        for index in range(count):
            chute_id, slug = deploy(suite, f"bench-route-{os.urandom(3).hex()}", suite.image, MIN_CONCURRENCY)
            headers = _headers(suite, {"Content-Type": "application/json", "Host": f"{slug}.{CHUTE_DOMAIN}"})
            try:
                _rest(suite, "GET", f"/chutes/warmup/{chute_id}?quick=true")  # want it: the launch
                # Wait for the port the miner reported (STARTED), then until it listens: the miner's
                # probe (every 100 ms) passes within one interval of that. Only then poll the gateway.
                deadline = time.monotonic() + WARMUP_TIMEOUT_SECONDS
                while (row := _instance(db, chute_id)) is None or not row["port"]:
                    if time.monotonic() > deadline:
                        raise RuntimeError("no instance started")
                    time.sleep(0.02)
                while not _accepts(row["host"], row["port"]):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the instance never listened")
                    time.sleep(0.001)
                listening = time.time()
                polls = 0
                while True:
                    sent = time.time()
                    gateway.request("POST", scenario.path, body, headers)
                    reply = gateway.getresponse()
                    reply.read()
                    polls += 1
                    if reply.status == 200:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no 200 through the gateway (last {reply.status})")
                    time.sleep(POLL_SECONDS)
                row = _instance(db, chute_id)
                ready = row["last_verified_at"].timestamp()
                logged = _miner_logged_ready(suite, row["instance_id"])
                measured.latencies_ms.append((sent - ready) * 1000)
                print(
                    f"    cold start {index + 1}/{count}: listening -> READY recorded "
                    f"{(ready - listening) * 1000:.1f} ms; READY recorded -> first 200 sent "
                    f"{(sent - ready) * 1000:.1f} ms (miner's READY log line -> first 200: "
                    f"{'-' if logged is None else f'{(sent - logged) * 1000:.1f} ms'}); {polls} polls",
                    flush=True,
                )
            except (OSError, RuntimeError, http.client.HTTPException) as failure:
                measured.errors += 1
                print(f"    cold start {index + 1}/{count}: {failure}", flush=True)
            finally:
                delete(suite, chute_id)
    gateway.close()
    measured.elapsed = time.perf_counter() - started
    return measured
