"""`chutes jobs create/get/download/delete`: start a chute's job, follow it, fetch its output files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

from chutes.cli.api import Api, ApiError, CommandError, ok_json, path_part
from chutes.cli.output import confirm, print_json
from chutes.config import Config, load_config


def _jobs_api(config: Config) -> Api:
    # The API declares no signing purpose for bodiless /jobs requests, so a hotkey cannot sign
    # them (the server would answer "Either payload_str or purpose must be provided"): say so early.
    if not config.api_key:
        raise CommandError("jobs get/download/delete need an API key: set CHUTES_API_KEY (or [auth] api_key)")
    return Api(config)


def cmd_jobs_create(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data) if args.data else {}
    except json.JSONDecodeError as error:
        raise CommandError(f"--data is not JSON: {error}") from None
    with Api(load_config()) as api:
        path = f"/jobs/{path_part(args.chute_id)}/{path_part(args.method)}"
        print_json(ok_json(api.post(path, data)))
    return 0


def cmd_jobs_get(args: argparse.Namespace) -> int:
    with _jobs_api(load_config()) as api:
        print_json(ok_json(api.get(f"/jobs/{path_part(args.job_id)}", purpose="jobs")))
    return 0


def cmd_jobs_delete(args: argparse.Namespace) -> int:
    if not confirm(f"Are you sure you want to delete jobs/{args.job_id}?", args.yes):
        return 1
    with _jobs_api(load_config()) as api:
        data = ok_json(api.delete(f"/jobs/{path_part(args.job_id)}", purpose="jobs"))
    print(
        json.dumps(data) if not isinstance(data, dict) else f"Deleted job {data.get('job_id', args.job_id)}"
    )
    return 0


def _filename_of(response: httpx.Response, fallback: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value:
            return Path(value.strip('"')).name or fallback
    return fallback


class Progress:
    """A progress line on stderr, shown only once a download has taken a second."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.shown_at = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.started >= 1.0 and now - self.shown_at >= 0.5:
            self.shown_at = now
            self._show()

    def _show(self) -> None:
        megabytes = self.done / 1e6
        if self.total:
            text = f"{megabytes:.1f} / {self.total / 1e6:.1f} MB ({100 * self.done // self.total}%)"
        else:
            text = f"{megabytes:.1f} MB"
        print(f"\rdownloading: {text}", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.shown_at:
            self._show()
            print(file=sys.stderr)


def cmd_jobs_download(args: argparse.Namespace) -> int:
    with _jobs_api(load_config()) as api:
        path = f"/jobs/{path_part(args.job_id)}/download/{path_part(args.file_id)}"
        response = api.stream_get(path, "jobs", httpx.Timeout(60.0, read=300.0))
        try:
            if not response.is_success:
                response.read()
                raise ApiError(response)
            target = Path(args.output or _filename_of(response, args.file_id))
            length = response.headers.get("content-length")
            progress = Progress(int(length) if length and length.isdigit() else None)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    progress.advance(len(chunk))
            progress.finish()
        except httpx.TransportError as error:
            raise CommandError(f"download broke: {error}") from None
        finally:
            response.close()
    print(f"Saved {progress.done} bytes to {target}")
    return 0
