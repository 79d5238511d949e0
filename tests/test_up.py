"""`chutes-suite up` as a user runs it: embedded database, ready line, clean stop, crashes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import httpx
import psutil

from services.kit.migrations import upgrade
from services.kit.settings import SERVICE_NAMES
from tests.conftest import RunningSuite, start_suite, suite_env


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _all_gone(processes: list[psutil.Process], timeout: float = 10) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _start_embedded(tmp_path: Path) -> tuple[RunningSuite, list[psutil.Process]]:
    tmp_path.chmod(0o755)  # the embedded server may run as the wheel's unprivileged user
    suite = start_suite(suite_env(tmp_path / "data", database_url=None))
    children = _descendants(suite.process.pid)
    names = " ".join(" ".join(p.cmdline()) for p in children)
    for expected in ("postgres", "envoy", *(f"services.{name}" for name in SERVICE_NAMES)):
        assert expected in names, f"{expected} not among the children of up"
    return suite, children


def test_up_on_embedded_database_serves_then_stops_leaving_nothing(tmp_path: Path) -> None:
    suite, children = _start_embedded(tmp_path)
    response = httpx.get(f"{suite.gateway}/chutes/boosted", timeout=10)
    assert response.status_code == 200 and response.json() == []
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()  # data kept under the data dir

    assert suite.stop(signal.SIGTERM) == 0
    assert _all_gone(children) == []
    log = "".join(suite.stderr_lines)
    assert "Traceback" not in log
    for name in SERVICE_NAMES:
        assert f"{name} stopped" in log  # each service went through its graceful stop

    # The data survives a restart: a second `up` on the same data dir comes up again.
    again, children = _start_embedded(tmp_path)
    assert again.stop(signal.SIGINT) == 0
    assert _all_gone(children) == []


def test_a_crashed_service_is_restarted_and_the_suite_runs_on(tmp_path: Path) -> None:
    suite, children = _start_embedded(tmp_path)
    [registry] = [p for p in children if "services.registry" in " ".join(p.cmdline())]
    registry.kill()
    deadline = time.monotonic() + 5  # tests/test_hardening_faults.py: under load, every child
    while "registry restarted" not in "".join(suite.stderr_lines):
        assert time.monotonic() < deadline and suite.process.poll() is None
        time.sleep(0.05)
    assert "registry exited with code -9; restarting it in" in "".join(suite.stderr_lines)
    children = _descendants(suite.process.pid)
    assert suite.stop(signal.SIGTERM) == 0
    assert _all_gone(children) == []


def test_killing_up_itself_leaves_no_orphans(tmp_path: Path) -> None:
    suite, children = _start_embedded(tmp_path)
    suite.process.kill()  # no chance to clean up: the children must notice on their own
    suite.process.wait(10)
    assert _all_gone(children, timeout=20) == []


def test_migrations_give_each_service_its_own_schema(database_url: str) -> None:
    for name in SERVICE_NAMES:
        upgrade(name, database_url)
        upgrade(name, database_url)  # idempotent

    async def schemas() -> set[str]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch("SELECT schema_name FROM information_schema.schemata")
            return {row["schema_name"] for row in rows}
        finally:
            await connection.close()

    assert set(SERVICE_NAMES) <= asyncio.run(schemas())
