"""The miner's control loop: register the node, follow its work stream, run and report instances.

State kept in the work dir (`state.json`): the node id and the last work event handled, so that a
restarted miner resumes the stream after it (a launch it already carried out is not repeated).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import urllib.parse
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from chutes.registry.v1 import miners_pb2, miners_pb2_grpc
from chutes.tee import load_or_create_node_key, public_key_bytes
from suite.miner import instances
from suite.miner.gpus import Inventory
from suite.miner.instances import FAILED, READY, STARTED, STOPPED, Instance, LaunchError

log = logging.getLogger("chutes.miner")

BACKOFF_MIN = 0.2
BACKOFF_MAX = 2.0
#: How long a report is retried while the registry cannot be reached (shorter when exiting).
REPORT_PATIENCE = 30.0
REPORT_PATIENCE_EXITING = 5.0
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class MinerError(Exception):
    """The miner cannot run (bad gateway URL, refused credentials, ...); the message says why."""


@dataclass(frozen=True)
class MinerSettings:
    gateway: str
    api_key: str | None
    name: str
    host: str
    work_dir: Path
    inventory: Inventory
    ready_timeout: float = 120.0
    stop_timeout: float = 30.0
    #: Offer the software TEE (chutes/tee.py): the node signs its TEE chutes' evidence with the
    #: key in `tee_key_file`, which it registers.
    software_tee: bool = False

    @property
    def tee_key_file(self) -> Path:
        return self.work_dir / "tee-node-key.pem"


def grpc_target(gateway: str) -> tuple[str, bool]:
    """`host:port` of the gateway URL, and whether it speaks TLS (https)."""
    parts = urllib.parse.urlsplit(gateway if "://" in gateway else f"http://{gateway}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MinerError(f"--gateway {gateway!r} is not an http(s) URL such as http://127.0.0.1:8000")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", secure


class StateFile:
    """`state.json`: node id and the last handled work event, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.node_id = ""
        self.last_event_id = 0
        try:
            data = json.loads(path.read_text())
            self.node_id = str(data.get("node_id", ""))
            self.last_event_id = int(data.get("last_event_id", 0))
        except (OSError, ValueError, AttributeError):
            pass

    def adopt_node(self, node_id: str) -> None:
        """The registry's node id; another node than the saved one starts from event 0."""
        if node_id != self.node_id:
            self.node_id, self.last_event_id = node_id, 0
            self.save()

    def handled(self, event_id: int) -> None:
        if event_id > self.last_event_id:
            self.last_event_id = event_id
            self.save()

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"node_id": self.node_id, "last_event_id": self.last_event_id}))
        os.replace(temporary, self.path)


class Miner:
    def __init__(self, settings: MinerSettings) -> None:
        self.settings = settings
        self.instances_dir = settings.work_dir / "instances"
        self.state = StateFile(settings.work_dir / "state.json")
        self.instances: dict[str, Instance] = {}
        self.metadata: Sequence[tuple[str, str]] = (
            [("authorization", settings.api_key)] if settings.api_key else []
        )
        self.exiting = asyncio.Event()
        self.node: miners_pb2.Node | None = None
        self.target, self.secure = grpc_target(settings.gateway)
        # The channel belongs to the running event loop: made in run().
        self.channel: grpc.aio.Channel | None = None
        self._stub: miners_pb2_grpc.MinerServiceAsyncStub | None = None
        self.background: set[asyncio.Task[object]] = set()

    @property
    def stub(self) -> miners_pb2_grpc.MinerServiceAsyncStub:
        assert self._stub is not None, "the miner is not running"
        return self._stub

    # ---- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Until SIGTERM/SIGINT: then stop every instance and return 0 (1 if registering failed
        for good)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.instances_dir.mkdir(exist_ok=True)
        self.channel = (
            grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials())
            if self.secure
            else grpc.aio.insecure_channel(self.target)
        )
        self._stub = miners_pb2_grpc.MinerServiceStub(self.channel)
        status = 0
        try:
            registered = asyncio.ensure_future(self.register())
            exiting = asyncio.ensure_future(self.exiting.wait())
            await asyncio.wait({registered, exiting}, return_when=asyncio.FIRST_COMPLETED)
            if registered.done():
                registered.result()  # raises MinerError
                await self.report_leftovers()
                watch = asyncio.ensure_future(self.watch())
                await asyncio.wait({watch, exiting}, return_when=asyncio.FIRST_COMPLETED)
                if watch.done():  # it only ends by failing
                    log.error("the work loop failed: %r", watch.exception())
                    status = 1
                watch.cancel()
            else:
                registered.cancel()
            exiting.cancel()
        except MinerError as error:
            log.error("%s", error)
            status = 1
        finally:
            self.exiting.set()
            await self.stop_all()
            await self.channel.close()
        log.info("miner stopped")
        return status

    def _on_signal(self, signum: int) -> None:
        if self.exiting.is_set():
            log.warning("%s again: killing every instance now", signal.Signals(signum).name)
            for instance in self.instances.values():
                instance.signal_group(signal.SIGKILL)
            return
        log.info("%s: stopping every instance, then exiting", signal.Signals(signum).name)
        self.exiting.set()

    async def stop_all(self) -> None:
        for instance in self.instances.values():
            instance.request_stop("the miner is exiting")
        tasks = [instance.task for instance in self.instances.values() if instance.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(self.background):
            task.cancel()

    # ---- registry calls ------------------------------------------------------------------------

    async def register(self) -> miners_pb2.Node:
        """RegisterNode, retried with backoff while the gateway or registry is unreachable."""
        inventory = self.settings.inventory
        request = miners_pb2.RegisterNodeRequest(
            name=self.settings.name,
            host=self.settings.host,
            gpus=[
                miners_pb2.Gpu(gpu_identifier=gpu.gpu_identifier, device_index=gpu.device_index)
                for gpu in inventory.gpus
            ],
            simulated=inventory.simulated,
        )
        if self.settings.software_tee:
            key = load_or_create_node_key(self.settings.tee_key_file)
            request.tee = "software"
            request.tee_public_key = public_key_bytes(key.public_key())
        delay = BACKOFF_MIN
        while True:
            try:
                node = await self.stub.RegisterNode(request, metadata=self.metadata, timeout=10)
            except grpc.aio.AioRpcError as error:
                if error.code() not in _TRANSIENT:
                    raise MinerError(
                        f"RegisterNode refused: {error.code().name}: {error.details()}"
                    ) from None
                log.warning("RegisterNode: %s (%s); retrying", error.code().name, error.details())
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self.node = node
            self.state.adopt_node(node.node_id)
            gpus = ", ".join(f"{gpu.gpu_identifier}#{gpu.device_index}" for gpu in node.gpus) or "none"
            log.info(
                "registered node %s (%s, host %s, GPUs: %s%s)",
                node.node_id,
                node.name,
                node.host,
                gpus,
                ", simulated" if node.simulated else "",
            )
            if node.tee:
                log.info(
                    "node offers the %s TEE (never TDX): its TEE chutes' evidence is signed by key %s",
                    node.tee,
                    node.tee_public_key.hex(),
                )
            return node

    async def report(
        self,
        instance_id: str,
        state: miners_pb2.InstanceState.ValueType,
        port: int = 0,
        reason: str = "",
    ) -> bool:
        """ReportInstance, retried while the registry cannot be reached; returns `wanted` (False
        when the registry does not know the instance)."""
        request = miners_pb2.ReportInstanceRequest(
            instance_id=instance_id,
            state=state,
            host=self.settings.host if port else "",
            port=port,
            reason=reason,
        )
        name = miners_pb2.InstanceState.Name(state).removeprefix("INSTANCE_STATE_")
        loop = asyncio.get_running_loop()
        patience = REPORT_PATIENCE_EXITING if self.exiting.is_set() else REPORT_PATIENCE
        deadline = loop.time() + patience
        delay = BACKOFF_MIN
        while True:
            try:
                response = await self.stub.ReportInstance(request, metadata=self.metadata, timeout=10)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    log.info("instance %s: registry does not know it (%s)", instance_id, error.details())
                    return False
                if code in _TRANSIENT and loop.time() + delay < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                log.error(
                    "instance %s: reporting %s failed: %s: %s", instance_id, name, code.name, error.details()
                )
                return True
            log.info("instance %s: %s%s", instance_id, name, f" ({reason})" if reason else "")
            return response.wanted

    async def report_leftovers(self) -> None:
        """Instances a killed miner left behind are gone: say so, so that the registry drops them."""
        for instance_id in instances.reap_leftovers(self.instances_dir):
            await self.report(instance_id, FAILED, reason="the miner restarted; the instance was lost")

    # ---- the work stream -----------------------------------------------------------------------

    async def watch(self) -> None:
        """WatchWork for as long as the miner runs, reconnecting with backoff on any stream end."""
        delay = BACKOFF_MIN
        while True:
            assert self.node is not None
            request = miners_pb2.WatchWorkRequest(
                node_id=self.node.node_id, after_event_id=self.state.last_event_id
            )
            try:
                call = self.stub.WatchWork(request, metadata=self.metadata)
                async for work in call:
                    delay = BACKOFF_MIN
                    await self.handle(work)
                log.warning("work stream ended; reconnecting")
            except grpc.aio.AioRpcError as error:
                log.warning("work stream: %s (%s); reconnecting", error.code().name, error.details())
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    with contextlib.suppress(MinerError):
                        await self.register()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def handle(self, work: miners_pb2.Work) -> None:
        kind = work.WhichOneof("kind")
        if kind == "launch":
            await self.launch(work.launch)
        elif kind == "stop":
            self.stop(work.stop.instance_id)
        else:
            return
        self.state.handled(work.event_id)

    async def launch(self, launch: miners_pb2.Launch) -> None:
        if launch.instance_id in self.instances:
            log.info("instance %s: already running; launch ignored", launch.instance_id)
            return
        log.info(
            "instance %s: launching %s (chute %s, version %s, GPUs %s)",
            launch.instance_id,
            launch.ref_str,
            launch.chute_id,
            launch.version,
            list(launch.device_indexes) or "none",
        )
        try:
            instance = await instances.spawn(
                launch,
                self.instances_dir,
                self.settings.host,
                tee_key_file=self.settings.tee_key_file
                if self.settings.software_tee and launch.tee
                else None,
            )
        except LaunchError as error:
            self._in_background(self.report(launch.instance_id, FAILED, reason=str(error)))
            return
        self.instances[instance.instance_id] = instance
        instance.task = asyncio.create_task(self.supervise(instance))

    def stop(self, instance_id: str) -> None:
        instance = self.instances.get(instance_id)
        if instance is None:
            # Not running here (any more): the registry only needs to hear it is gone.
            self._in_background(self.report(instance_id, STOPPED))
            return
        instance.request_stop("the registry asked for it")

    def _in_background(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # ---- one instance --------------------------------------------------------------------------

    async def supervise(self, instance: Instance) -> None:
        """Report STARTED, probe until READY, watch until it exits or is stopped; then remove its
        directory and report FAILED or STOPPED."""
        loop = asyncio.get_running_loop()
        reason = ""
        try:
            failure = await self._start(instance, loop.time() + self.settings.ready_timeout)
            if failure is None:
                stop = asyncio.ensure_future(instance.stop_requested.wait())
                await asyncio.wait({instance.exited(), stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
            if failure is None and instance.stop_requested.is_set():
                log.info("instance %s: stopping (%s)", instance.instance_id, instance.stop_reason)
                returncode = await instances.terminate(instance, self.settings.stop_timeout)
                log.info("instance %s: %s", instance.instance_id, instances.exit_status(returncode))
            elif instance.job and failure is None and await instance.exited() == 0:
                log.info("instance %s: its job ended (exit status 0)", instance.instance_id)
            else:
                if failure is None:
                    failure = instances.exit_status(await instance.exited())
                await instances.terminate(instance, 0)
                reason = instance.failure_reason(failure)
                log.warning("instance %s failed: %s", instance.instance_id, reason)
        finally:
            if not instance.exited().done():
                instance.signal_group(signal.SIGKILL)
            instance.remove_directory()
            self.instances.pop(instance.instance_id, None)
        await self.report(instance.instance_id, FAILED if reason else STOPPED, reason=reason)

    async def _start(self, instance: Instance, deadline: float) -> str | None:
        """STARTED, then READY once the probe passes; the failure when it does not come up (None
        when it is ready, or was asked to stop meanwhile)."""
        if not await self.report(instance.instance_id, STARTED, port=instance.port):
            instance.request_stop("the registry no longer wants it")
            return None
        if instance.job:
            return None  # a job serves nothing: it runs until it exits
        outcome = await instances.wait_ready(instance, deadline)
        if outcome == "exited":
            return instances.exit_status(await instance.exited()) + " before it was ready"
        if outcome == "timeout":
            return f"not ready (listening on port {instance.port}) within {self.settings.ready_timeout:g} s"
        if outcome == "ready" and not await self.report(instance.instance_id, READY, port=instance.port):
            instance.request_stop("the registry no longer wants it")
        return None
