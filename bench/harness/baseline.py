"""The FastAPI baseline (bench/baselines/fastapi_chutes.py), started against the suite's database."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import REPO
from .processes import free_ports
from .scenarios import Scenario
from .suite import SHUTDOWN_TIMEOUT_SECONDS, Suite

#: The FastAPI baseline of the registry's read paths; run.py starts it, it installs nothing.
BASELINE_APP = REPO / "bench" / "baselines" / "fastapi_chutes.py"
BASELINE_PACKAGES = ("fastapi", "uvicorn", "httptools")
BASELINE_INSTALL_HINT = ".venv/bin/pip install fastapi uvicorn httptools"
BASELINE_STARTUP_TIMEOUT_SECONDS = 30.0


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
