"""The miner (`suite/miner/`): a real miner process against a fake registry, real instances.

`FakeRegistry` below is a TEST DOUBLE of the registry's side of MinerService (grpc.aio, in this
process, on a free port): it records RegisterNode, WatchWork and ReportInstance calls and feeds
each node's stream from a list of work events the test appends to. The miner is the real one
(`python -m suite.miner`, the same entry point as `chutes-miner`), pointed at it with
`--gateway http://127.0.0.1:PORT`; its instances are real `chutes run` processes serving
examples/echo_chute.py on this machine's CPU.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import psutil
import pytest

from chutes.registry.v1 import miners_pb2, miners_pb2_grpc
from suite.miner.gpus import (
    DetectedGpu,
    InventoryError,
    NodeGpu,
    catalog_key,
    detect_nvidia,
    parse_declared,
    resolve_inventory,
)

ROOT = Path(__file__).resolve().parent.parent
ECHO_CODE = (ROOT / "examples" / "echo_chute.py").read_text()
HAS_NVIDIA = bool(detect_nvidia())
API_KEY = "cpk_test-miner-key"

STARTED = miners_pb2.INSTANCE_STATE_STARTED
READY = miners_pb2.INSTANCE_STATE_READY
FAILED = miners_pb2.INSTANCE_STATE_FAILED
STOPPED = miners_pb2.INSTANCE_STATE_STOPPED

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---- the fake registry (test double) -------------------------------------------------------------


@dataclass
class Report:
    at: float  # time.monotonic() when it arrived
    request: miners_pb2.ReportInstanceRequest


@dataclass
class FakeRegistry(miners_pb2_grpc.MinerServiceServicer):
    """TEST DOUBLE of the registry's MinerService: records calls, serves scripted work."""

    registrations: list[tuple[miners_pb2.RegisterNodeRequest, dict[str, str]]] = field(default_factory=list)
    watches: list[miners_pb2.WatchWorkRequest] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    events: dict[str, list[miners_pb2.Work]] = field(default_factory=dict)  # by node id
    unwanted: set[str] = field(default_factory=set)  # instances whose reports answer wanted=false
    next_event_id: int = 0
    stream_generation: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    changed: asyncio.Event | None = None
    port: int = 0

    # servicer side (runs on self.loop) ----------------------------------------------------------

    async def RegisterNode(
        self, request: miners_pb2.RegisterNodeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> miners_pb2.Node:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        self.registrations.append((request, metadata))
        if metadata.get("authorization") != API_KEY:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid credentials")
        node_id = str(uuid.uuid5(uuid.NAMESPACE_URL, request.name))
        return miners_pb2.Node(
            node_id=node_id,
            name=request.name,
            host=request.host,
            gpus=request.gpus,
            simulated=request.simulated,
        )

    async def WatchWork(
        self, request: miners_pb2.WatchWorkRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        self.watches.append(request)
        generation = self.stream_generation
        sent = request.after_event_id
        assert self.changed is not None
        while True:
            if self.stream_generation != generation:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "test: stream dropped")
            for work in list(self.events.get(request.node_id, [])):
                if work.event_id > sent:
                    sent = work.event_id
                    yield work
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except TimeoutError:
                yield miners_pb2.Work(event_id=sent, keep_alive=miners_pb2.KeepAlive())

    async def ReportInstance(
        self, request: miners_pb2.ReportInstanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> miners_pb2.ReportInstanceResponse:
        self.reports.append(Report(time.monotonic(), request))
        return miners_pb2.ReportInstanceResponse(wanted=request.instance_id not in self.unwanted)

    # test side (any thread) ------------------------------------------------------------------------

    def _call(self, function: Callable[[], T]) -> T:
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as error:
                future.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    def _add(self, node_id: str, work: miners_pb2.Work) -> int:
        self.next_event_id += 1
        work.event_id = self.next_event_id
        self.events.setdefault(node_id, []).append(work)
        assert self.changed is not None
        self.changed.set()
        return work.event_id

    def launch(
        self, node_id: str, instance_id: str, code: str = ECHO_CODE, devices: tuple[int, ...] = (0,)
    ) -> int:
        work = miners_pb2.Work(
            launch=miners_pb2.Launch(
                instance_id=instance_id,
                chute_id=str(uuid.uuid4()),
                version=str(uuid.uuid4()),
                code=code,
                filename="echo_chute.py",
                ref_str="echo_chute:chute",
                device_indexes=list(devices),
            )
        )
        return self._call(lambda: self._add(node_id, work))

    def stop(self, node_id: str, instance_id: str) -> int:
        work = miners_pb2.Work(stop=miners_pb2.Stop(instance_id=instance_id))
        return self._call(lambda: self._add(node_id, work))

    def drop_streams(self) -> None:
        def drop() -> None:
            self.stream_generation += 1
            assert self.changed is not None
            self.changed.set()

        self._call(drop)

    def states(self, instance_id: str) -> list[int]:
        return [report.request.state for report in self.reports if report.request.instance_id == instance_id]

    def report_of(self, instance_id: str, state: int) -> Report | None:
        for report in self.reports:
            if report.request.instance_id == instance_id and report.request.state == state:
                return report
        return None

    def serve(self) -> Iterator[FakeRegistry]:
        async def start() -> grpc.aio.Server:
            self.changed = asyncio.Event()
            server = grpc.aio.server()
            miners_pb2_grpc.add_MinerServiceServicer_to_server(self, server)
            self.port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            return server

        thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        thread.start()
        server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(0), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join(10)


@pytest.fixture(scope="module")
def registry() -> Iterator[FakeRegistry]:
    yield from FakeRegistry().serve()


# ---- the miner process ----------------------------------------------------------------------------


@dataclass
class MinerProcess:
    process: subprocess.Popen[bytes]
    name: str
    node_id: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def instance_processes(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if "chutes.cli" in child.cmdline():
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
        return found

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@pytest.fixture
def start_miner(registry: FakeRegistry, tmp_path: Path) -> Iterator[Callable[..., MinerProcess]]:
    started: list[MinerProcess] = []

    def start(*extra: str, name: str | None = None, api_key: str = API_KEY) -> MinerProcess:
        name = name or f"node-{uuid.uuid4().hex[:8]}"
        log = tmp_path / f"miner-{len(started)}.log"
        argv = [sys.executable, "-m", "suite.miner", "--gateway", f"http://127.0.0.1:{registry.port}"]
        argv += ["--api-key", api_key, "--name", name, "--work-dir", str(tmp_path / "work")]
        argv += ["--ready-timeout", "60", "--stop-timeout", "10"]
        if not HAS_NVIDIA and "--gpus" not in extra:
            argv.append("--simulate")
        env = {key: value for key, value in os.environ.items() if not key.startswith("CHUTES_")}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*argv, *extra], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        miner = MinerProcess(process, name, str(uuid.uuid5(uuid.NAMESPACE_URL, name)), log)
        started.append(miner)
        return miner

    yield start
    for miner in started:
        if miner.process.poll() is None:
            for child in miner.instance_processes():
                child.kill()
            miner.process.kill()
            miner.process.wait(10)


def wait_ready(
    registry: FakeRegistry, miner: MinerProcess, instance_id: str, timeout: float = 60.0
) -> Report:
    def ready() -> Report | None:
        failed = registry.report_of(instance_id, FAILED)
        if failed is not None:
            raise AssertionError(f"instance failed: {failed.request.reason}\n{miner.output()}")
        if miner.process.poll() is not None:
            raise AssertionError(f"miner exited {miner.process.returncode}:\n{miner.output()}")
        return registry.report_of(instance_id, READY)

    return wait_for(f"{instance_id} READY", ready, timeout)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---- GPU inventory (no process) -------------------------------------------------------------------


def test_nvml_device_names_map_to_catalog_keys() -> None:
    gb = 1024**3
    assert catalog_key("NVIDIA H100 80GB HBM3", 80 * gb) == "h100_sxm"
    assert catalog_key("NVIDIA H100 PCIe", 80 * gb) == "h100"
    assert catalog_key("NVIDIA H100 NVL", 94 * gb) == "h100_nvl"
    assert catalog_key("NVIDIA A100-SXM4-80GB", 80 * gb) == "a100_sxm"
    assert catalog_key("NVIDIA A100 80GB PCIe", 80 * gb) == "a100"
    assert catalog_key("NVIDIA A100-PCIE-40GB", 40 * gb) == "a100_40gb"
    assert catalog_key("NVIDIA GeForce RTX 4090", 24 * gb) == "4090"
    assert catalog_key("NVIDIA RTX 6000 Ada Generation", 48 * gb) == "a6000_ada"
    assert catalog_key("NVIDIA RTX A6000", 48 * gb) == "a6000"
    assert catalog_key("NVIDIA L40S", 48 * gb) == "l40s"
    assert catalog_key("NVIDIA L4", 24 * gb) == "l4"
    assert catalog_key("NVIDIA H200", 141 * gb) == "h200"
    assert catalog_key("Tesla T4", 16 * gb) is None


def test_declared_inventory_and_a_real_node_never_pretends() -> None:
    assert parse_declared("a100:2,h100:1") == (NodeGpu("a100", 0), NodeGpu("a100", 1), NodeGpu("h100", 2))
    assert parse_declared("l4") == (NodeGpu("l4", 0),)
    for bad in ("t4:1", "a100:x", "a100:0", ""):
        with pytest.raises(InventoryError):
            parse_declared(bad)

    none: list[DetectedGpu] = []
    assert resolve_inventory(None, True, none).gpus == (NodeGpu("a100", 0),)
    assert resolve_inventory(None, True, none).simulated
    assert resolve_inventory("h100:2", False, none).gpus == (NodeGpu("h100", 0), NodeGpu("h100", 1))
    with pytest.raises(InventoryError, match="--simulate"):
        resolve_inventory(None, False, none)

    real = [DetectedGpu(0, "NVIDIA H100 80GB HBM3", 80 * 1024**3), DetectedGpu(1, "Tesla T4", 16 * 1024**3)]
    inventory = resolve_inventory(None, False, real)
    assert inventory.gpus == (NodeGpu("h100_sxm", 0),) and not inventory.simulated
    for declared, simulate in (("a100:1", False), (None, True)):
        with pytest.raises(InventoryError, match="only for machines without them"):
            resolve_inventory(declared, simulate, real)


@pytest.mark.skipif(HAS_NVIDIA, reason="this machine has NVIDIA GPUs: declaring is refused")
def test_simulated_inventories_register_as_simulated(
    registry: FakeRegistry, start_miner: Callable[..., MinerProcess]
) -> None:
    default = start_miner("--simulate")
    declared = start_miner("--gpus", "h100:2")
    for miner in (default, declared):
        wait_for(
            f"{miner.name} registers",
            lambda m=miner: [r for r, _ in registry.registrations if r.name == m.name],
        )
    by_name = {request.name: (request, metadata) for request, metadata in registry.registrations}

    request, metadata = by_name[default.name]
    assert request.simulated and request.host == "127.0.0.1"
    assert [(gpu.gpu_identifier, gpu.device_index) for gpu in request.gpus] == [("a100", 0)]
    assert metadata["authorization"] == API_KEY
    assert "no NVIDIA GPUs found: declaring a simulated inventory" in wait_for(
        "the log line", lambda: "simulated=true" in default.output() and default.output()
    )
    request, _ = by_name[declared.name]
    assert request.simulated
    assert [(gpu.gpu_identifier, gpu.device_index) for gpu in request.gpus] == [("h100", 0), ("h100", 1)]

    wait_for(
        "both watch their work",
        lambda: len({w.node_id for w in registry.watches} & {default.node_id, declared.node_id}) == 2,
    )
    assert default.terminate() == 0 and declared.terminate() == 0


def test_a_refused_credential_ends_the_miner(start_miner: Callable[..., MinerProcess]) -> None:
    miner = start_miner(api_key="cpk_wrong")
    assert miner.process.wait(30) == 1
    assert "RegisterNode refused: UNAUTHENTICATED: Invalid credentials" in miner.output()


# ---- instances ------------------------------------------------------------------------------------


def test_launch_serves_the_chute_then_stop_removes_it(
    registry: FakeRegistry, start_miner: Callable[..., MinerProcess], tmp_path: Path
) -> None:
    miner = start_miner()
    wait_for("the work stream", lambda: any(w.node_id == miner.node_id for w in registry.watches))
    launched_at = time.monotonic()
    registry.launch(miner.node_id, "inst-echo")
    ready = wait_ready(registry, miner, "inst-echo")
    print(f"\nlaunch -> READY: {ready.at - launched_at:.3f} s")
    started = registry.report_of("inst-echo", STARTED)
    assert started is not None and started.request.port == ready.request.port
    assert ready.request.host == "127.0.0.1" and ready.request.port > 0
    assert registry.states("inst-echo") == [STARTED, READY]

    response = httpx.post(f"http://127.0.0.1:{ready.request.port}/echo", json={"text": "hi"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == {"text": "hi"}

    [instance] = miner.instance_processes()
    assert instance.environ()["CUDA_VISIBLE_DEVICES"] == "0"
    # None of the miner's own settings; only what the instance is given: where its output goes
    # (served to the owner, chutes/instance_logs.py).
    environ = instance.environ()
    assert {key for key in environ if key.startswith("CHUTES_")} <= {
        "CHUTES_EXECUTION_CONTEXT",
        "CHUTES_INSTANCE_LOG",
    }
    assert environ["CHUTES_INSTANCE_LOG"].endswith("/inst-echo/instance.log")
    directory = tmp_path / "work" / "instances" / "inst-echo"
    assert (directory / "echo_chute.py").read_text() == ECHO_CODE

    registry.stop(miner.node_id, "inst-echo")
    wait_for("STOPPED", lambda: registry.report_of("inst-echo", STOPPED), 20)
    assert registry.states("inst-echo") == [STARTED, READY, STOPPED]
    assert gone(instance.pid)
    assert not directory.exists()
    assert miner.terminate() == 0


def test_an_instance_that_dies_is_reported_failed(
    registry: FakeRegistry, start_miner: Callable[..., MinerProcess]
) -> None:
    miner = start_miner()
    registry.launch(miner.node_id, "inst-doomed")
    wait_ready(registry, miner, "inst-doomed")
    [instance] = miner.instance_processes()
    killed_at = time.monotonic()
    instance.kill()
    failed = wait_for("FAILED", lambda: registry.report_of("inst-doomed", FAILED), 5)
    print(f"\ndeath -> FAILED: {failed.at - killed_at:.3f} s")
    assert failed.at - killed_at < 2.0
    assert "killed by SIGKILL" in failed.request.reason
    assert (
        "Uvicorn running" in failed.request.reason or "Application startup complete" in failed.request.reason
    )
    assert registry.states("inst-doomed") == [STARTED, READY, FAILED]
    assert miner.process.poll() is None
    assert miner.terminate() == 0


def test_a_chute_that_cannot_start_is_reported_failed(
    registry: FakeRegistry, start_miner: Callable[..., MinerProcess]
) -> None:
    miner = start_miner()
    broken = ECHO_CODE + "\nraise RuntimeError('this chute is broken on purpose')\n"
    registry.launch(miner.node_id, "inst-broken", code=broken)
    failed = wait_for("FAILED", lambda: registry.report_of("inst-broken", FAILED), 60)
    assert "exited with status" in failed.request.reason and "before it was ready" in failed.request.reason
    assert "this chute is broken on purpose" in failed.request.reason
    assert READY not in registry.states("inst-broken")
    assert miner.terminate() == 0


def test_an_unwanted_instance_is_stopped(
    registry: FakeRegistry, start_miner: Callable[..., MinerProcess]
) -> None:
    miner = start_miner()
    registry.unwanted.add("inst-unwanted")
    registry.launch(miner.node_id, "inst-unwanted")
    wait_for("STOPPED", lambda: registry.report_of("inst-unwanted", STOPPED), 60)
    assert registry.states("inst-unwanted")[-1] == STOPPED
    assert READY not in registry.states("inst-unwanted")
    assert wait_for("no instance process", lambda: not miner.instance_processes(), 5)
    assert miner.terminate() == 0


def test_reconnects_resumes_after_restart_and_sigterm_stops_instances(
    registry: FakeRegistry, start_miner: Callable[..., MinerProcess], tmp_path: Path
) -> None:
    miner = start_miner()
    event_id = registry.launch(miner.node_id, "inst-resume")
    wait_ready(registry, miner, "inst-resume")
    [instance] = miner.instance_processes()

    # A dropped stream is reopened after the last handled event.
    watches = len(registry.watches)
    registry.drop_streams()
    again = wait_for(
        "a new WatchWork", lambda: [w for w in registry.watches[watches:] if w.node_id == miner.node_id]
    )
    assert again[0].after_event_id == event_id

    # SIGTERM: every instance is stopped (STOPPED reported), nothing is left, exit status 0.
    assert miner.terminate() == 0, miner.output()
    assert registry.states("inst-resume") == [STARTED, READY, STOPPED]
    assert gone(instance.pid)
    assert not (tmp_path / "work" / "instances" / "inst-resume").exists()

    # The restarted miner resumes after the launch it already handled: no second launch.
    watches = len(registry.watches)
    restarted = start_miner(name=miner.name)
    resumed = wait_for(
        "WatchWork", lambda: [w for w in registry.watches[watches:] if w.node_id == miner.node_id]
    )
    assert resumed[0].after_event_id == event_id
    time.sleep(1.0)
    assert registry.states("inst-resume") == [STARTED, READY, STOPPED]
    assert not restarted.instance_processes()
    assert restarted.terminate() == 0


def test_a_killed_miner_leaves_no_instance_and_its_successor_reports_it_lost(
    registry: FakeRegistry, start_miner: Callable[..., MinerProcess], tmp_path: Path
) -> None:
    miner = start_miner()
    registry.launch(miner.node_id, "inst-orphan")
    wait_ready(registry, miner, "inst-orphan")
    [instance] = miner.instance_processes()
    miner.process.kill()  # no chance to stop anything: PR_SET_PDEATHSIG sends the instance SIGTERM
    miner.process.wait(10)
    wait_for("the orphan to exit", lambda: gone(instance.pid), 10)
    assert (tmp_path / "work" / "instances" / "inst-orphan").exists()

    restarted = start_miner(name=miner.name)
    lost = wait_for("FAILED", lambda: registry.report_of("inst-orphan", FAILED), 30)
    assert "the miner restarted" in lost.request.reason
    assert not (tmp_path / "work" / "instances" / "inst-orphan").exists()
    assert restarted.terminate() == 0
    print("\n" + restarted.output())


def test_an_instance_that_will_not_stop_is_killed_after_the_stop_timeout(
    registry: FakeRegistry, start_miner: Callable[..., MinerProcess]
) -> None:
    miner = start_miner("--stop-timeout", "1")
    stuck = (
        ECHO_CODE + "\n\n@chute.on_shutdown()\nasync def stuck(self) -> None:\n    await asyncio.sleep(60)\n"
    )
    registry.launch(miner.node_id, "inst-stuck", code=stuck)
    wait_ready(registry, miner, "inst-stuck")
    [instance] = miner.instance_processes()
    asked_at = time.monotonic()
    registry.stop(miner.node_id, "inst-stuck")
    stopped = wait_for("STOPPED", lambda: registry.report_of("inst-stuck", STOPPED), 10)
    assert 0.9 < stopped.at - asked_at < 5.0
    assert gone(instance.pid)
    assert "instance inst-stuck: killed by SIGKILL" in miner.output()
    assert miner.terminate() == 0
