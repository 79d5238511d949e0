"""The stack under test: a private `chutes-suite up` (services, Envoy, embedded PostgreSQL)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import REPO
from .credentials import Credentials
from .processes import children_of, cpu_ticks, free_ports, process_name, start_time, tree_cpu_ticks
from .scenarios import Scenario

if TYPE_CHECKING:
    from .baseline import BaselineServer
    from .invocation import EchoChute
    from .seed import Seeded
    from .transfer import JobChute, Payload, StoredFile

#: Same list as services.kit.settings.SERVICE_NAMES; copied so the harness imports nothing of the suite
#: except the generated protobuf messages.
SERVICES = ("identity", "registry", "jobs", "attestation", "metrics")
#: `up` gives itself 60 s; first start also runs initdb and migrations, so allow more before giving up.
STARTUP_TIMEOUT_SECONDS = 120.0
#: `up` waits up to shutdown grace (10 s) + 5 s per child; this covers it with margin.
SHUTDOWN_TIMEOUT_SECONDS = 60.0
#: The local miner's simulated inventory when invocation scenarios run: the echo chute asks for one
#: GPU, and the cold-start scenarios start fresh copies next to the one that is measured hot.
LOCAL_MINER_GPUS = "pro_6000:4"


class SuiteFailed(Exception):
    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


@dataclass
class Suite:
    """A private `chutes-suite up` on free ports and a temp data dir, so it never meets a running suite."""

    workdir: Path
    gateway_port: int
    addresses: dict[str, str]
    #: Run `up`'s local miner (only for invocation scenarios: the read paths are measured without it).
    miner: bool = False
    #: `CHUTES_*` settings of this suite beyond the harness's own (Scenario.settings).
    settings: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    #: name -> (pid, start time): the start time guards against killing a reused pid.
    pids: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: The embedded database's postmaster: measured with its backends, never killed by us (`up`
    #: stops it last).
    postgres_pid: int | None = None
    #: The baselines ("baseline": the ORM one, "lean": the lean peer), each once a scenario of its
    #: started it.
    baselines: dict[str, BaselineServer] = field(default_factory=dict)
    #: The seeded chutes, once a read scenario asked for them.
    seeded: Seeded | None = None
    #: The hot echo chute and its instance, once an invocation scenario asked for it, and the image
    #: (of the harness's user) its fresh copies are deployed with.
    chute: EchoChute | None = None
    image: str | None = None
    #: CHUTES_JOB_TOKEN_SECRET of this suite: the transfer scenarios mint job tokens with it.
    job_token_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    #: The transfer scenarios' job chute, the file the downloads read, and the generated payload.
    job_chute: JobChute | None = None
    job_file: StoredFile | None = None
    payload: Payload | None = None
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
            # The read-path scenarios need no instances; a miner would only add noise.
            CHUTES_LOCAL_MINER="true" if self.miner else "false",
            CHUTES_LOCAL_MINER_GPUS=LOCAL_MINER_GPUS,
            CHUTES_JOB_TOKEN_SECRET=self.job_token_secret,
        )
        for name, address in self.addresses.items():
            env[f"CHUTES_{name.upper()}_ADDRESS"] = address
        env.update(self.settings)
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
            name, started = process_name(pid), start_time(pid)
            if name == "postgres":
                self.postgres_pid = pid
            elif name and started:
                self.pids[name] = (pid, started)
        missing = {"envoy", *SERVICES, *(["miner"] if self.miner else [])} - set(self.pids)
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
            if start_time(pid) == started:  # still the very process `up` started: it was left behind
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
        elif target in ("baseline", "lean"):
            assert target in self.baselines, f"the {target} server is not running"
            host_port = self.baselines[target].address
        elif target == "instance":
            assert self.chute is not None, "the echo chute is not deployed"
            host_port = self.chute.address
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
        for name, server in self.baselines.items():
            ticks[name] = cpu_ticks(server.process.pid)
        if self.chute is not None:
            ticks["instance"] = cpu_ticks(self.chute.pid)
        return ticks


@contextmanager
def running_suite(miner: bool = False, settings: dict[str, str] | None = None) -> Iterator[Suite]:
    workdir = Path(tempfile.mkdtemp(prefix="chutes-bench-"))
    ports = free_ports(3 + len(SERVICES))
    # The two ext_authz endpoints (identity's signature check, the registry's invocation check)
    # have addresses too.
    names = (*SERVICES, "identity_authz", "registry_authz")
    addresses = {name: f"127.0.0.1:{port}" for name, port in zip(names, ports[1:], strict=True)}
    suite = Suite(workdir, ports[0], addresses, miner, settings or {})
    try:
        given = "".join(f", {name}={value}" for name, value in suite.settings.items())
        print(f"starting chutes-suite up (gateway port {suite.gateway_port}, data {workdir}{given})")
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
