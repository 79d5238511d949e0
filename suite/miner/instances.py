"""One instance: a `chutes run` process serving a chute's code, from launch to exit.

An instance lives in `{work_dir}/instances/{instance_id}/`: the chute file, `instance.log` (its
stdout and stderr) and `pid`. The process runs in its own session (so a Ctrl-C at the miner's
terminal reaches only the miner, which stops instances in order) and gets SIGTERM should the
miner die, however it dies (PR_SET_PDEATHSIG, as `chutes-suite up` does for its children; set by
a two-line prelude that then execs `python -m chutes.cli run ...` in the same process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from chutes.evidence import NODE_KEY_ENV
from chutes.instance_logs import LOG_FILE_ENV
from chutes.registry.v1 import miners_pb2

# The instance's first act, before it becomes `python -m chutes.cli run ...` by exec: ask for
# SIGTERM when the miner dies (PR_SET_PDEATHSIG = 1; it survives exec), and leave at once if the
# miner (argv[1]) already died. Done in the child's own code rather than in a preexec_fn: forking
# a process with gRPC's threads running and then running Python before exec can crash the child.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.executable, sys.argv[2:])\n"
)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SAFE_FILENAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")
_REF = re.compile(r"^(?P<module>[A-Za-z_][A-Za-z0-9_]*):(?P<variable>[A-Za-z_][A-Za-z0-9_]*)$")
LOG_TAIL_LINES = 20


class LaunchError(Exception):
    """The launch cannot be carried out (bad work item, process did not start)."""


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def instance_env(
    device_indexes: list[int], tee_key_file: Path | None = None, log_file: Path | None = None
) -> dict[str, str]:
    """The miner's environment without its CHUTES_* settings, with the reserved GPUs visible, the
    file its output goes to (served to the owner, chutes/instance_logs.py) and the node's TEE key
    (chutes/evidence.py)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHUTES_")}
    if log_file is not None:
        env[LOG_FILE_ENV] = str(log_file)
    if tee_key_file is not None:
        env[NODE_KEY_ENV] = str(tee_key_file)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in device_indexes)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open(errors="replace") as file:
            return "".join(deque(file, maxlen=lines)).rstrip("\n")
    except OSError:
        return ""


def exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


@dataclass(eq=False)
class Instance:
    instance_id: str
    directory: Path
    host: str
    port: int
    process: asyncio.subprocess.Process
    #: Runs a job once instead of serving cords (no port; exit status 0 means it completed).
    job: bool = False
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why a stop was asked for (logged); set with stop_requested.
    stop_reason: str = ""
    #: The supervising task (reports and cleanup), set by the miner.
    task: asyncio.Task[None] | None = None
    _exited: asyncio.Task[int] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "instance.log"

    def exited(self) -> asyncio.Task[int]:
        """A task that completes with the return code when the process exits."""
        if self._exited is None:
            self._exited = asyncio.ensure_future(self.process.wait())
        return self._exited

    def request_stop(self, reason: str) -> None:
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    def signal_group(self, signum: int) -> None:
        """Signal the whole process group (the instance and anything it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def failure_reason(self, what: str) -> str:
        tail = log_tail(self.log_path)
        return f"{what}; last log lines:\n{tail}" if tail else f"{what}; the log is empty"

    def remove_directory(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


async def spawn(
    launch: miners_pb2.Launch, instances_dir: Path, host: str, tee_key_file: Path | None = None
) -> Instance:
    """Write the chute file into the instance's directory and start `chutes run` on it. With
    `tee_key_file` (a node offering the software TEE), a TEE chute's instance signs evidence with it."""
    if not _SAFE_ID.match(launch.instance_id):
        raise LaunchError(f"instance id {launch.instance_id!r} is not a safe directory name")
    if not _SAFE_FILENAME.match(launch.filename):
        raise LaunchError(f"filename {launch.filename!r} is not a plain Python file name")
    ref = _REF.match(launch.ref_str)
    if ref is None:
        raise LaunchError(f"ref_str {launch.ref_str!r} is not module:variable")
    if f"{ref['module']}.py" != launch.filename:
        raise LaunchError(f"ref_str {launch.ref_str!r} does not name the file {launch.filename!r}")
    directory = instances_dir / launch.instance_id
    shutil.rmtree(directory, ignore_errors=True)
    try:
        directory.mkdir(parents=True)
        (directory / launch.filename).write_text(launch.code, encoding="utf-8")
        port = 0 if launch.HasField("job") else free_port(host)
    except OSError as error:
        shutil.rmtree(directory, ignore_errors=True)
        raise LaunchError(f"cannot prepare the instance: {error}") from error
    argv = [sys.executable, "-m", "chutes.cli", "run", f"{ref['module']}:{ref['variable']}"]
    if launch.HasField("job"):
        # A job instance runs the method once, reports to the job's status URL itself, and exits.
        job = launch.job
        argv += ["--job-method", job.method, "--job-data", job.data_json or "{}"]
        argv += ["--job-status-url", job.status_url, "--job-id", job.job_id]
    else:
        argv += ["--host", host, "--port", str(port)]
    wrapper = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid())]
    with (directory / "instance.log").open("ab") as log_file:
        try:
            process = await asyncio.create_subprocess_exec(
                *wrapper,
                *argv,
                cwd=directory,
                env=instance_env(list(launch.device_indexes), tee_key_file, directory / "instance.log"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            shutil.rmtree(directory, ignore_errors=True)
            raise LaunchError(f"cannot start chutes run: {error}") from error
    (directory / "pid").write_text(str(process.pid))
    return Instance(launch.instance_id, directory, host, port, process, job=launch.HasField("job"))


async def accepts_connections(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_ready(instance: Instance, deadline: float, interval: float = 0.1) -> str:
    """Probe until the instance listens: "ready", "exited", "stop" (asked to stop meanwhile) or
    "timeout". `chutes run` listens only once the chute's startup hooks have run."""
    loop = asyncio.get_running_loop()
    exited = instance.exited()
    stop = asyncio.ensure_future(instance.stop_requested.wait())
    try:
        while True:
            if exited.done():
                return "exited"
            if stop.done():
                return "stop"
            if await accepts_connections(instance.host, instance.port):
                return "ready"
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "timeout"
            await asyncio.wait({exited, stop}, timeout=min(interval, remaining))
    finally:
        stop.cancel()


async def terminate(instance: Instance, grace: float) -> int:
    """SIGTERM (the instance finishes in-flight calls and runs its shutdown hooks), SIGKILL of
    its process group after `grace` seconds; then whatever it left running is killed too."""
    exited = instance.exited()
    if not exited.done():
        with contextlib.suppress(ProcessLookupError):
            instance.process.send_signal(signal.SIGTERM)
        done, _ = await asyncio.wait({exited}, timeout=grace)
        if not done:
            instance.signal_group(signal.SIGKILL)
    returncode = await exited
    instance.signal_group(signal.SIGKILL)
    return returncode


def reap_leftovers(instances_dir: Path) -> list[str]:
    """Instance directories a previous miner left behind (it was killed): kill any process still
    running in one, remove them all, and return their instance ids."""
    if not instances_dir.is_dir():
        return []
    found = []
    for directory in sorted(instances_dir.iterdir()):
        if not directory.is_dir():
            continue
        try:
            pid = int((directory / "pid").read_text())
            if Path(f"/proc/{pid}/cwd").resolve() == directory.resolve():
                os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        shutil.rmtree(directory, ignore_errors=True)
        found.append(directory.name)
    return found


STARTED = miners_pb2.INSTANCE_STATE_STARTED
READY = miners_pb2.INSTANCE_STATE_READY
FAILED = miners_pb2.INSTANCE_STATE_FAILED
STOPPED = miners_pb2.INSTANCE_STATE_STOPPED
