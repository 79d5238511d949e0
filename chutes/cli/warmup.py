"""`chutes warmup`: ask the API to warm a chute up and follow its status stream until it is hot."""

from __future__ import annotations

import argparse
import json

import httpx

from chutes.cli.api import Api, ApiError, CommandError, path_part
from chutes.config import load_config

# The API's warmup stream lasts up to 600 s.
WARMUP_TIMEOUT = httpx.Timeout(30.0, read=660.0)


def _warmup_target(target: str) -> str:
    """A chute name or id; `module:chute` naming a local chute file stands for that chute's name."""
    if ":" in target:
        from chutes.runner import ChuteLoadError, load_chute, module_file

        if module_file(target.split(":", 1)[0]) is not None:
            try:
                return str(load_chute(target).chute.name)
            except ChuteLoadError:
                pass
    return target


def cmd_warmup(args: argparse.Namespace) -> int:
    target = _warmup_target(args.chute)
    hot = False
    with Api(load_config()) as api:
        response = api.stream_get(f"/chutes/warmup/{path_part(target)}", "chutes", WARMUP_TIMEOUT)
        try:
            if not response.is_success:
                response.read()
                raise ApiError(response)
            # SSE: `data: {"status": ..., "log": ...}` events until the chute is hot or the API gives up.
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                try:
                    event = json.loads(line[5:].strip())
                except json.JSONDecodeError:
                    continue
                status, log = event.get("status"), event.get("log", "")
                print(f"{status}: {log}", flush=True)
                hot = hot or status == "hot"
        except httpx.TransportError as error:
            raise CommandError(f"warmup stream broke: {error}") from None
        finally:
            response.close()
    if not hot:
        raise CommandError(f"chute {target} did not become hot")
    return 0
