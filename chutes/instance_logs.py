"""The log endpoint an instance serves: `GET /_chutes/logs?backfill=N`, its own output as SSE.

The real platform streams an instance's logs from its logging port (`/logs/stream`) to the
owner through the API (`GET /instances/{id}/logs?backfill=`, which the published CLI's warmup
dashboard reads). Here the miner writes each instance's output to a file in its directory and
names it in `CHUTES_INSTANCE_LOG`; the instance answers with the last `backfill` lines, then
follows the file as it grows, each line one `data: {"log": "..."}` event, until the client goes.
The registry relays it to the chute's owner (services/registry/instance_logs.py); the gateway
never lets a chute's callers reach `/_chutes/` paths themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

LOGS_PATH = "/_chutes/logs"
#: Set by the miner: the file the instance's stdout and stderr go to.
LOG_FILE_ENV = "CHUTES_INSTANCE_LOG"
MAX_BACKFILL = 10_000
#: How often a followed file is checked for new lines.
FOLLOW_SECONDS = 0.25


def _event(line: str) -> bytes:
    return f"data: {json.dumps({'log': line.rstrip(chr(10))})}\n\n".encode()


class LogsEndpoint:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_environment(cls) -> LogsEndpoint | None:
        path = os.environ.get(LOG_FILE_ENV)
        return cls(Path(path)) if path else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("backfill", ["100"])
        try:
            backfill = int(values[-1])
        except ValueError:
            backfill = -1
        if not 0 <= backfill <= MAX_BACKFILL:
            detail = f"backfill must be an integer from 0 to {MAX_BACKFILL}"
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        gone = asyncio.ensure_future(self._disconnected(receive))
        try:
            with self.path.open(errors="replace") as file:
                for line in deque(file, maxlen=backfill) if backfill else ():
                    await send({"type": "http.response.body", "body": _event(line), "more_body": True})
                file.seek(0, os.SEEK_END)
                partial = ""
                while not gone.done():
                    chunk = file.read()
                    if not chunk:
                        await asyncio.wait({gone}, timeout=FOLLOW_SECONDS)
                        continue
                    *lines, partial = (partial + chunk).split("\n")
                    for line in lines:
                        await send({"type": "http.response.body", "body": _event(line), "more_body": True})
        except OSError as error:
            await send(
                {"type": "http.response.body", "body": _event(f"log unavailable: {error}"), "more_body": True}
            )
        finally:
            gone.cancel()
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
