"""Faults survived (issue 16, defects 9 and 10), black-box: `chutes-suite up` on its own embedded
PostgreSQL, under a steady load of requests through the gateway. Each service, then Envoy, is
killed with SIGKILL: the supervisor restarts it within 5 s while the others keep answering. Then
PostgreSQL is killed: calls that need it are a 503 with a JSON detail (never a 500) until it is
back, and then everything answers again."""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import pytest

from services.kit.settings import SERVICE_NAMES
from suite.up import _serving
from tests.conftest import RunningSuite, start_suite, suite_env, wait_for

#: A route of each service that any client may call (a service without one is probed over gRPC).
ROUTES = {"identity": "/ping", "registry": "/chutes/boosted", "metrics": "/chutes/utilization"}


@dataclass
class Load:
    """Requests to every route, one after another, until stopped: what each answered."""

    gateway: str
    answers: list[tuple[float, str, int, str]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.gateway, timeout=10) as http:
            while not self.stopped.is_set():
                for path in ROUTES.values():
                    try:
                        response = http.get(path)
                    except httpx.TransportError:  # the gateway itself restarting
                        self.answers.append((time.monotonic(), path, 0, ""))
                        time.sleep(0.05)
                        continue
                    self.answers.append((time.monotonic(), path, response.status_code, response.text))
                time.sleep(0.02)

    def since(self, started: float, path: str) -> list[int]:
        return [status for at, p, status, _ in self.answers if at >= started and p == path]


def child(suite: RunningSuite, marker: str) -> psutil.Process:
    [process] = [
        p for p in psutil.Process(suite.process.pid).children()
        if marker in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE
    ]  # fmt: skip
    return process


def answers_now(gateway: str, path: str) -> bool:
    try:
        return httpx.get(gateway + path, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Not under pytest's tmp_path: the embedded server runs as the wheel's unprivileged user, and
    any pytest session starting meanwhile makes /tmp/pytest-of-<user> private again (0700), so a
    restarted PostgreSQL could no longer reach its data directory there."""
    with tempfile.TemporaryDirectory(prefix="chutes-test-faults-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp) / "data"


def test_killed_children_come_back_and_the_rest_keep_serving(data_dir: Path) -> None:
    suite = start_suite(suite_env(data_dir, database_url=None))
    load = Load(suite.gateway)
    worker = threading.Thread(target=load.run, daemon=True)
    worker.start()
    try:
        wait_for("first answers", lambda: len(load.answers) > 10)
        for name in SERVICE_NAMES:
            killed = child(suite, f"services.{name}")
            started = time.monotonic()
            killed.send_signal(signal.SIGKILL)
            address = suite.address_of(name)
            wait_for(f"{name} back", lambda: _serving(address), timeout=5)  # noqa: B023 (called at once)
            if name in ROUTES:
                route = ROUTES[name]
                wait_for(f"{name} answering", lambda: answers_now(suite.gateway, route), timeout=5)  # noqa: B023
            time.sleep(0.3)
            for other, path in ROUTES.items():
                if other != name:  # never down while another service was
                    assert set(load.since(started, path)) == {200}, (name, other, load.since(started, path))
            assert time.monotonic() - started < 6
        started = time.monotonic()
        child(suite, "envoy").send_signal(signal.SIGKILL)
        wait_for("the gateway back", lambda: answers_now(suite.gateway, "/ping"), timeout=5)

        child(suite, "postgres").send_signal(signal.SIGKILL)
        time.sleep(1)
        wait_for(
            "answers after PostgreSQL restarted",
            lambda: all(answers_now(suite.gateway, path) for path in ROUTES.values()),
            timeout=30,
        )
        assert suite.process.poll() is None  # the suite ran on throughout
    except AssertionError:
        # What the supervisor and PostgreSQL said, and the last answers: why it did not recover.
        said = [  # not the services' own log lines and tracebacks
            line for line in suite.stderr_lines
            if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,|\s|\w+Error|The above|\[SQL|\(Background", line)
        ]  # fmt: skip
        print("supervisor and database:", "".join(said[-80:]), sep="\n")
        print("last answers:", [(p, status, text[:80]) for _, p, status, text in load.answers[-6:]])
        raise
    finally:
        load.stopped.set()
        worker.join(15)
        code = suite.stop()
    assert code == 0
    # Nothing was a 500 or anything but JSON, whatever was down.
    for _, path, status, text in load.answers:
        assert status in (0, 200, 503), f"{path}: {status} {text}\n{_first_traceback(suite)}"
        if status == 503:
            assert text.startswith('{"detail":'), text
    log = "".join(suite.stderr_lines)
    for name in (*SERVICE_NAMES, "envoy", "postgres"):
        assert f"{name} exited with code -9; restarting it in" in log
        assert f"{name} restarted (pid" in log


def _first_traceback(suite: RunningSuite) -> str:
    """What a service logged from its first unhandled error on (its traceback): why a 500."""
    for start, line in enumerate(suite.stderr_lines):
        if "unhandled error" in line:
            return "".join(suite.stderr_lines[start : start + 60])
    return "(no unhandled error logged)"
