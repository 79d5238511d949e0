"""Fixture for tests/test_chute_run.py: a CPU chute with every kind of cord and ordered hooks.

Hooks append one line each to the file named by RUN_HOOKS_FILE; passthrough cords proxy to the
test's upstream server on RUN_UPSTREAM_PORT. RUN_FAIL_STARTUP=1 makes a startup hook fail.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from chutes.chute import Chute, NodeSelector

HOOKS = Path(os.environ["RUN_HOOKS_FILE"])
UPSTREAM_PORT = int(os.environ.get("RUN_UPSTREAM_PORT", "8000"))


def record(event: str) -> None:
    with HOOKS.open("a") as hooks:
        hooks.write(event + "\n")


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    # A plain FastAPI lifespan: `chutes run` runs it inside the chute's own hooks.
    record("lifespan:start")
    yield
    record("lifespan:stop")


chute = Chute(
    username="runner",
    name="run-echo",
    image="runner/base:1.0",
    node_selector=NodeSelector(gpu_count=1),
    lifespan=lifespan,
)


@chute.on_startup(priority=90)
async def late(self) -> None:
    record("startup:late")


@chute.on_startup(priority=10)
def early(self) -> None:
    record("startup:early")
    if os.environ.get("RUN_FAIL_STARTUP") == "1":
        raise RuntimeError("startup refused on purpose")


@chute.on_startup()
async def normal(self) -> None:
    record("startup:normal")
    self.state.greeting = "hello"


@chute.on_shutdown(priority=80)
async def second(self) -> None:
    record("shutdown:second")


@chute.on_shutdown(priority=20)
def first(self) -> None:
    record("shutdown:first")


@chute.cord()
async def echo(self, body: dict[str, Any]) -> dict[str, Any]:
    return {"echo": body, "greeting": self.state.greeting}


@chute.cord(stream=True)
async def count(self, body: dict[str, Any]) -> AsyncIterator[str]:
    for number in range(int(body["to"])):
        yield f"data: {number}\n\n"


@chute.cord(stream=True)
def letters(self, body: str) -> Iterator[str]:
    # A sync generator: drained in a worker thread.
    yield from body


class Repeat(BaseModel):
    text: str
    times: int = 2


@chute.cord()
async def repeat(self, args: Repeat) -> str:
    return args.text * args.times


@chute.cord(public_api_path="/v1/info", public_api_method="GET")
async def info(self) -> dict[str, Any]:
    return {"name": self.name, "cords": [cord.path for cord in self.cords]}


@chute.cord(passthrough=True, passthrough_port=UPSTREAM_PORT, passthrough_path="/v1/upstream")
async def proxy(data: Any) -> Any:
    return data


@chute.cord(passthrough=True, stream=True, passthrough_port=UPSTREAM_PORT, passthrough_path="/v1/lines")
async def proxy_lines(data: Any) -> Any:
    return data
