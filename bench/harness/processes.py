"""Free ports, and the processes of a run as /proc shows them: who they are and how much CPU they used."""

from __future__ import annotations

import os
import socket
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_ports(count: int) -> list[int]:
    # Hold every socket until all are bound, so the ports are distinct.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces and parentheses)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of the process, in clock ticks (0 once it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def faults_and_system_ticks(pid: int) -> tuple[int, int] | None:
    """Minor page faults and system CPU (clock ticks) of the process, or None once it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[7]), int(fields[12])) if fields else None


def tree_cpu_ticks(root: int) -> int:
    """CPU of a process and all its descendants, living or reaped, in clock ticks: PostgreSQL's
    backends are children of the postmaster, and an exited backend's time moves into the
    postmaster's cutime/cstime. One pass over /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
                ticks[int(entry.name)] = sum(int(fields[i]) for i in (11, 12, 13, 14))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += ticks.get(pid, 0)
        pending.extend(child for child, parent in parents.items() if parent == pid)
    return total


def start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def children_of(parent: int) -> list[int]:
    """Direct children, as `pgrep -P` finds them, without depending on procps or psutil."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def process_name(pid: int) -> str | None:
    """Envoy is "envoy", a service its name, the local miner "miner", the embedded database
    "postgres", or None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in argv if a]
    if args and Path(args[0]).name in ("envoy", "postgres"):
        return Path(args[0]).name
    if "-m" in args[:-1]:
        module = args[args.index("-m") + 1]
        if module.startswith("services."):
            return module.removeprefix("services.")
        if module == "suite.miner":
            return "miner"
    return None
