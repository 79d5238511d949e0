"""The baselines of bench/baselines/, started against the suite's database: the ORM one
(fastapi_chutes.py, the real API's stack) and the lean peer (lean_chutes.py, issue 14)."""

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

#: Scenario target -> the server of the registry's read paths it names; run.py starts each when a
#: scenario first needs it, and installs nothing.
BASELINE_APPS = {
    "baseline": REPO / "bench" / "baselines" / "fastapi_chutes.py",
    "lean": REPO / "bench" / "baselines" / "lean_chutes.py",
}
BASELINE_PACKAGES = {
    "baseline": ("fastapi", "uvicorn", "httptools"),
    "lean": ("fastapi", "uvicorn", "httptools", "orjson"),
}
BASELINE_INSTALL_HINT = ".venv/bin/pip install fastapi uvicorn httptools orjson"
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
    wanted = {name for s in scenarios for name in BASELINE_PACKAGES.get(s.target, ())}
    missing = sorted(name for name in wanted if importlib.util.find_spec(name) is None)
    if missing:
        raise BaselineMissing(
            f"the FastAPI baselines need {', '.join(missing)} (not a dependency of the suite)\n"
            f"install them with: {BASELINE_INSTALL_HINT}"
        )


@contextmanager
def running_baseline(suite: Suite, target: str) -> Iterator[BaselineServer]:
    """The baseline `target` names (BASELINE_APPS) on a free port against the suite's database,
    until exit."""
    port = free_ports(1)[0]
    log = suite.workdir / f"{target}.log"
    app = BASELINE_APPS[target]
    command = [sys.executable, str(app), "--database-url", suite.database_url(), "--port", str(port)]
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
                raise BaselineFailed(f"the baseline {app.name} did not start", tail)
            time.sleep(0.1)
        print(f"{target}: {app.name} on http://{server.address} (pid {process.pid})", flush=True)
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
