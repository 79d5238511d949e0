"""A small chute that needs no GPU to run: an echo, a counter that streams, and a greeter.

Try it locally (cords on their public paths with --dev):

    chutes run examples/echo_chute:chute --dev --port 8080
    curl -s localhost:8080/echo -d '{"text": "hi"}'
    curl -sN localhost:8080/count -d '{"to": 3}'
    curl -s localhost:8080/greet -d '{"name": "Ada", "excited": true}'

Deploy it on a suite where `alice` owns the image `alice/cli-base:1.0` (README: "Write, run and
deploy a chute"):

    CHUTES_USERNAME=alice chutes deploy examples/echo_chute:chute --accept-fee

The image must be a plain string reference (or a `chutes.image.Image`); CHUTES_USERNAME and
CHUTES_IMAGE only exist so that the same file deploys for any user. The node selector asks for
one GPU because the platform schedules chutes on GPUs; the code itself runs anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, Field

from chutes.chute import Chute, NodeSelector

USERNAME = os.environ.get("CHUTES_USERNAME", "alice")
IMAGE = os.environ.get("CHUTES_IMAGE", f"{USERNAME}/cli-base:1.0")

chute = Chute(
    username=USERNAME,
    name="echo",
    image=IMAGE,
    tagline="Echoes, counts and greets; runs on a CPU.",
    readme="An example chute: `/echo` returns its input, `/count` streams numbers, `/greet` greets.",
    node_selector=NodeSelector(gpu_count=1),
    concurrency=4,
)


# `self` (the chute) is left unannotated, as in every chute file: the SDK derives each cord's
# input schema from its annotated parameters, and `self` is not part of the input.


@chute.on_startup()
async def started(self) -> None:
    # Startup hooks run before the cords are served: load models, open clients, ... here.
    # `state` is the FastAPI app's free-form namespace, a safe place for per-instance data.
    self.state.started_at = time.time()
    self.state.calls = 0


@chute.on_shutdown()
async def stopped(self) -> None:
    print(f"echo chute served {self.state.calls} calls")


@chute.cord(public_api_path="/echo")
async def echo(self, body: dict[str, Any]) -> dict[str, Any]:
    """A plain cord: the whole JSON body is the one argument after `self`."""
    self.state.calls += 1
    return {"echo": body, "uptime_seconds": round(time.time() - self.state.started_at, 3)}


@chute.cord(stream=True, public_api_path="/count", output_content_type="text/event-stream")
async def count(self, body: dict[str, Any]) -> AsyncIterator[str]:
    """A streaming cord: each yielded string is sent as it is produced (here as SSE events). With
    `"usage": true` it ends like an LLM's stream, with an OpenAI-shaped usage event (one "token"
    per number), which the platform records with the call."""
    self.state.calls += 1
    last = int(body.get("to", 3))
    for number in range(1, last + 1):
        yield f"data: {json.dumps({'n': number})}\n\n"
        await asyncio.sleep(0.05)
    if body.get("usage"):
        usage = {"prompt_tokens": 1, "completion_tokens": last, "total_tokens": last + 1}
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    excited: bool = False


class Reply(BaseModel):
    message: str


@chute.cord(public_api_path="/greet")
async def greet(self, greeting: Greeting) -> Reply:
    """A cord with a pydantic input: the body is validated into `Greeting` (bad input: 400)."""
    self.state.calls += 1
    return Reply(message=f"Hello, {greeting.name}{'!' if greeting.excited else '.'}")
