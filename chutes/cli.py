"""The `chutes` command: run chutes locally, deploy them, and manage chutes, keys and jobs.

Requests are those of the published `chutes` CLI 0.6.9 (official-client-wire.md): same paths,
query strings, JSON bodies (compact, same key order), signing purposes and config.ini. Where this
command deliberately differs, `DIFFERENCES` below says so; `chutes --help` prints it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

import httpx

from chutes.config import Config, ConfigError, load_config
from chutes.util.auth import auth_headers

DIFFERENCES = """\
differences from the published CLI:
  - every API error exits non-zero (the published CLI exits 0 after logging most errors);
  - CHUTES_API_URL wins over [api] base_url, and there is no default URL;
  - an API key (CHUTES_API_KEY or [auth] api_key) is used instead of hotkey signing when set;
  - prompts appear only when stdin is a terminal (--yes skips them);
  - chute references may be paths (examples/echo_chute:chute);
  - `jobs` commands exist (the published CLI has none)."""


def _version() -> str:
    try:
        return importlib.metadata.version("chutes-suite")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


VERSION = _version()
# Deploys run the API's whole pipeline; the real CLI sets no timeout at all for them.
DEPLOY_TIMEOUT: float | None = None
# The API's warmup stream lasts up to 600 s.
WARMUP_TIMEOUT = httpx.Timeout(30.0, read=660.0)


class CommandError(Exception):
    """A failure to report as one line on stderr, exit status 1."""


class ApiError(CommandError):
    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        super().__init__(f"{response.status_code}: {detail_of(response)}")


def detail_of(response: httpx.Response) -> str:
    """The API's error text: `detail` of the JSON error body (422 lists flattened), else the body."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text.strip() or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for problem in detail:
            if isinstance(problem, dict):
                location = ".".join(str(part) for part in problem.get("loc", []))
                parts.append(f"{location}: {problem.get('msg', problem)}")
            else:
                parts.append(str(problem))
        return "; ".join(parts)
    return detail if isinstance(detail, str) else json.dumps(detail)


def compact(body: Any) -> bytes:
    """JSON bytes as the published CLI's orjson writes them: no spaces, UTF-8, key order kept."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def path_part(value: str) -> str:
    # Names and image refs go into paths verbatim (`/images/alice/base:1.0`, chute names with
    # `/`), as the real client sends them; only characters that would break the URL are escaped.
    return quote(value, safe="/:@")


class Api:
    """One command's API session: authentication per request, errors as `ApiError`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.client = httpx.Client(
            base_url=config.api_base_url,
            timeout=httpx.Timeout(60.0),
            headers={"User-Agent": f"chutes-suite/{VERSION}"},
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        try:
            return self.client.send(request, stream=stream)
        except httpx.TransportError as error:
            raise CommandError(f"cannot reach {self.config.api_base_url}: {error}") from None

    def get(self, path: str, purpose: str, timeout: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        headers = auth_headers(self.config, purpose=purpose)
        return self._send(self.client.build_request("GET", path, headers=headers, timeout=timeout))

    def delete(self, path: str, purpose: str) -> httpx.Response:
        # Content-Length: 0 as the real client sends it; the signature is over the purpose.
        headers = {**auth_headers(self.config, purpose=purpose), "Content-Length": "0"}
        return self._send(self.client.build_request("DELETE", path, headers=headers))

    def post(
        self,
        path: str,
        body: Any,
        extra_headers: dict[str, str] | None = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        payload = compact(body)  # signed and sent byte for byte
        headers = {**auth_headers(self.config, payload=payload), **(extra_headers or {})}
        request = self.client.build_request("POST", path, content=payload, headers=headers, timeout=timeout)
        return self._send(request)

    def stream_get(self, path: str, purpose: str, timeout: Any) -> httpx.Response:
        headers = auth_headers(self.config, purpose=purpose)
        request = self.client.build_request("GET", path, headers=headers, timeout=timeout)
        return self._send(request, stream=True)


def ok_json(response: httpx.Response) -> Any:
    if not response.is_success:
        raise ApiError(response)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CommandError(
            f"the API answered {response.status_code} without JSON: {response.text[:200]}"
        ) from None


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask only on a terminal: a script piping into `chutes` gets the action without a prompt."""
    if assume_yes or not sys.stdin.isatty():
        return True
    return input(f"{question} (y/n) ").strip().lower() == "y"


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; a cell may hold several lines."""
    split_rows = [[cell.splitlines() or [""] for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in split_rows:
        for index, lines in enumerate(row):
            widths[index] = max(widths[index], *(len(line) for line in lines))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * width for width in widths])]
    for row in split_rows:
        for number in range(max(len(lines) for lines in row)):
            out.append(line([lines[number] if number < len(lines) else "" for lines in row]))
    return "\n".join(out)


# ---- run ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    # Both must be set before the chute module (and the SDK) is imported: the SDK decides at
    # import/decoration time whether cords run here (remote) or call the API (local).
    os.environ["CHUTES_EXECUTION_CONTEXT"] = "REMOTE"
    if args.dev:
        os.environ["CHUTES_DEV_MODE"] = "true"
    from chutes.runner import JobRunError, job_data_of, load_chute, run_job, serve

    job_options = (args.job_id, args.job_data, args.job_status_url)
    if args.job_method is None and any(option is not None for option in job_options):
        raise CommandError("--job-id, --job-data and --job-status-url need --job-method")
    try:
        data = job_data_of(args.job_data) if args.job_method else {}
    except JobRunError as error:
        raise CommandError(str(error)) from None
    loaded = load_chute(args.chute)
    if args.job_method is None:
        return serve(loaded.chute, args.host, args.port)

    import asyncio

    if args.job_id:
        os.environ["CHUTES_JOB_ID"] = args.job_id
    try:
        result = asyncio.run(run_job(loaded.chute, args.job_method, data, args.job_status_url))
    except JobRunError as error:
        raise CommandError(str(error)) from None
    except asyncio.CancelledError:
        print("chutes run: job cancelled", file=sys.stderr)
        return 1
    except TimeoutError as error:
        print(f"chutes run: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str))
    return 0 if result.get("status") == "complete" else 1


# ---- deploy ------------------------------------------------------------------------------------


def deploy_body(loaded: Any, public: bool, logo_id: str | None = None) -> dict[str, Any]:
    """The deploy body, key for key in the published CLI's order (official-client-wire.md 3.1)."""
    chute = loaded.chute
    if chute.node_selector is None:
        # The real CLI crashes here (it calls .dict() on None); the API needs a selector anyway.
        raise CommandError(f"chute {chute.name} has no node_selector: add node_selector=NodeSelector(...)")
    if loaded.file is None:
        raise CommandError(f"{loaded.ref_str}: deploying needs the chute's source file")
    return {
        "name": chute.name,
        "tagline": chute.tagline,
        "readme": chute.readme,
        "logo_id": logo_id,
        "image": image_ref(chute),
        "public": public,
        "standard_template": chute.standard_template,
        "node_selector": chute.node_selector.dict(),
        "filename": loaded.file.name,
        "ref_str": loaded.ref_str,
        "code": loaded.file.read_text(encoding="utf-8"),
        "concurrency": chute.concurrency,
        "max_instances": chute.max_instances,
        "scaling_threshold": chute.scaling_threshold,
        "shutdown_after_seconds": chute.shutdown_after_seconds,
        "allow_external_egress": chute.allow_external_egress,
        "encrypted_fs": chute.encrypted_fs,
        "tee": chute.tee,
        "lock_modules": chute.lock_modules,
        "revision": chute.revision,
        "cords": [cord.to_dict() for cord in chute.cords],
        "jobs": [job.to_dict() for job in chute.jobs],
    }


def image_ref(chute: Any) -> str:
    """The image string verbatim, or an `Image` object's uid (uuid5 of `user/name:tag`, lower-cased)."""
    image = chute.image
    return image if isinstance(image, str) else str(image.uid)


def cmd_deploy(args: argparse.Namespace) -> int:
    from chutes.runner import load_chute

    config = load_config()
    loaded = load_chute(args.chute)
    body = deploy_body(loaded, public=args.public)
    chute = loaded.chute
    with Api(config) as api:
        ref = body["image"]
        image = api.get(f"/images/{path_part(ref)}", purpose="images")
        ready = False
        if image.status_code == 200:
            try:
                info = image.json()
            except json.JSONDecodeError:
                info = {}
            ready = info.get("status") == "built and pushed" and (info.get("public") or not args.public)
        if not ready:
            why = detail_of(image) if image.status_code != 200 else "not built, or not public for --public"
            raise CommandError(f"Image '{ref}' is not available to be used (yet)! ({why})")
        if args.public:
            me = ok_json(api.get("/users/me", purpose="me"))
            allowed = int(me.get("permissions_bitmask") or 0) & (1 << 11) or (
                "Allow deploying models publicly." in (me.get("permissions") or [])
            )
            if not allowed:
                raise CommandError("You do not have permission to deploy public chutes.")
        if not confirm(f"You are about to upload {loaded.file} and deploy {chute.name}, confirm?", args.yes):
            print("Aborted.", file=sys.stderr)
            return 1
        fee = "true" if args.accept_fee else "false"
        response = api.post(
            f"/chutes/?accept_fee={fee}",
            body,
            extra_headers={"X-Chutes-Version": VERSION},
            timeout=DEPLOY_TIMEOUT,
        )
        result = ok_json(response)
    print(
        f"Successfully deployed chute {chute.name} chute_id='{result['chute_id']}' "
        f"version={result['version']} invocations will be available soon!"
    )
    return 0


# ---- chutes list/get/delete, share, warmup ------------------------------------------------------


def _cord_line(cord: dict[str, Any]) -> str:
    return (
        f"{cord.get('function')} / stream={cord.get('stream')} / "
        f"{cord.get('public_api_method')} {cord.get('public_api_path')}"
    )


def cmd_chutes_list(args: argparse.Namespace) -> int:
    query: list[tuple[str, str]] = [("include_public", str(bool(args.include_public)))]  # True/False
    if args.name:
        query.append(("name", args.name))
    query += [("limit", str(args.limit)), ("page", str(args.page))]
    with Api(load_config()) as api:
        data = ok_json(api.get(f"/chutes/?{urlencode(query)}", purpose="chutes"))
    items = data.get("items") or []
    print(f"Found {data.get('total', 0)} matching chutes, displaying {len(items)}")
    if items:
        refs = data.get("cord_refs") or {}
        rows = [
            [
                str(item.get("name")),
                str(item.get("chute_id")),
                "hot" if item.get("hot") else "cold",
                str(item.get("slug")),
                "\n".join(_cord_line(cord) for cord in refs.get(item.get("cord_ref_id"), []) or []),
            ]
            for item in items
        ]
        print(table(["name", "chute_id", "hot", "slug", "cords"], rows))
    return 0


def cmd_chutes_get(args: argparse.Namespace) -> int:
    with Api(load_config()) as api:
        print_json(ok_json(api.get(f"/chutes/{path_part(args.chute)}", purpose="chutes")))
    return 0


def cmd_chutes_delete(args: argparse.Namespace) -> int:
    if not confirm(f"Are you sure you want to delete chutes/{args.chute_id}?", args.yes):
        return 1
    with Api(load_config()) as api:
        data = ok_json(api.delete(f"/chutes/{path_part(args.chute_id)}", purpose="chutes"))
    print(f"Successfully deleted chute {data.get('chute_id', args.chute_id)}")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    path = "/chutes/unshare" if args.remove else "/chutes/share"
    body = {"chute_id_or_name": args.chute_id, "user_id_or_name": args.user_id}
    with Api(load_config()) as api:
        data = ok_json(api.post(path, body))
    print(data.get("status", json.dumps(data)) if isinstance(data, dict) else json.dumps(data))
    return 0


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


# ---- keys --------------------------------------------------------------------------------------


def key_body(args: argparse.Namespace) -> dict[str, Any]:
    """`POST /api_keys/` bodies as the real CLI builds them (name, admin, scopes), minus its bug
    of sending the `--images`/`--chutes` scope twice."""
    body: dict[str, Any] = {"name": args.name, "admin": bool(args.admin)}
    if args.json_input:
        try:
            extra = json.loads(args.json_input)
        except json.JSONDecodeError as error:
            raise CommandError(f"--json-input is not JSON: {error}") from None
        if not isinstance(extra, dict) or not isinstance(extra.get("scopes"), list):
            raise CommandError('--json-input must be {"scopes": [...]}')
        body["scopes"] = extra["scopes"]
        return body
    scopes: list[dict[str, str]] = []
    for object_type, everything, ids in (
        ("images", args.images, args.image_ids),
        ("chutes", args.chutes, args.chute_ids),
    ):
        if everything:
            scopes.append({"object_type": object_type})
        scopes += [{"object_type": object_type, "object_id": object_id} for object_id in ids or []]
    if scopes:
        if args.admin:
            raise CommandError("--admin keys have no scopes")
        if not args.action:
            raise CommandError("scoped keys need --action (read, write, delete or invoke)")
        body["scopes"] = [{**scope, "action": args.action} for scope in scopes]
    return body


def cmd_keys_create(args: argparse.Namespace) -> int:
    body = key_body(args)
    with Api(load_config()) as api:
        data = ok_json(api.post("/api_keys/", body))
    print_json(data)
    print(f'To use the key, add "Authorization: Basic {data["secret_key"]}" to your headers!')
    print(f"(or: export CHUTES_API_KEY={data['secret_key']})")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    query = urlencode([("limit", str(args.limit)), ("page", str(args.page))])
    with Api(load_config()) as api:
        data = ok_json(api.get(f"/api_keys/?{query}", purpose="api_keys"))
    items = data.get("items", []) if isinstance(data, dict) else data
    if isinstance(data, dict) and "total" in data:
        print(f"Found {data['total']} matching keys, displaying {len(items)}")
    rows = [
        [
            str(item.get("api_key_id")),
            str(item.get("name")),
            "true" if item.get("admin") else "false",
            "\n".join(json.dumps(scope) for scope in item.get("scopes") or []) or "-",
        ]
        for item in items
    ]
    if rows:
        print(table(["api_key_id", "name", "admin", "scopes"], rows))
    return 0


def cmd_keys_get(args: argparse.Namespace) -> int:
    with Api(load_config()) as api:
        print_json(ok_json(api.get(f"/api_keys/{path_part(args.key_id)}", purpose="api_keys")))
    return 0


def cmd_keys_delete(args: argparse.Namespace) -> int:
    if not confirm(f"Are you sure you want to delete api_keys/{args.key_id}?", args.yes):
        return 1
    with Api(load_config()) as api:
        data = ok_json(api.delete(f"/api_keys/{path_part(args.key_id)}", purpose="api_keys"))
    print(f"Successfully deleted api_key {data.get('api_key_id', args.key_id)}")
    return 0


# ---- jobs --------------------------------------------------------------------------------------


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


# ---- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="chutes",
        description="Run, deploy and manage chutes on a Chutes API (e.g. a local `chutes-suite up`).\n\n"
        "Configuration: CHUTES_API_URL, CHUTES_API_KEY, and ~/.chutes/config.ini "
        "(or CHUTES_CONFIG_PATH) with [api] base_url and [auth] user_id, username, hotkey_seed, "
        "hotkey_name, hotkey_ss58address, api_key.",
        epilog=DIFFERENCES,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"chutes (chutes-suite) {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        group: Any, name: str, handler: Callable[[argparse.Namespace], int], text: str, **kwargs: Any
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=text, description=text, **kwargs)
        sub.set_defaults(handler=handler)
        return sub

    run = command(
        commands,
        "run",
        cmd_run,
        "serve a chute over HTTP (or run one of its jobs)",
        formatter_class=raw,
        epilog="Exit status: 0 after a clean shutdown (SIGTERM/Ctrl-C), 3 when the chute cannot start.\n\n"
        "Jobs: with --job-method the chute is initialized, the job runs with the --job-data keyword\n"
        "arguments and reports to --job-status-url (POST result, PUT output uploads, PUT done), the\n"
        "result is printed as JSON, and the exit status is 0 if the job completed, 1 otherwise.",
    )
    run.add_argument("chute", help="module:variable, e.g. echo_chute:chute or examples/echo_chute:chute")
    run.add_argument("--host", default="0.0.0.0")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--dev",
        action="store_true",
        help="serve cords at their public_api_path/method (CHUTES_DEV_MODE=true)",
    )
    run.add_argument("--job-method", help="run this job of the chute instead of serving it")
    run.add_argument("--job-id", help="the job's id (exported to the job as CHUTES_JOB_ID)")
    run.add_argument("--job-data", help="the job's arguments: a JSON object, or @file.json")
    run.add_argument("--job-status-url", help="where the job reports (the API's /jobs/{id}?token=... URL)")

    deploy = command(
        commands,
        "deploy",
        cmd_deploy,
        "deploy a chute: checks its image, then POST /chutes/",
        formatter_class=raw,
        epilog="Exits 1 when the image is not ready or the API refuses the deploy (the published CLI\n"
        "exits 0 after logging the API's error).",
    )
    deploy.add_argument("chute", help="module:variable, e.g. echo_chute:chute")
    deploy.add_argument("--accept-fee", action="store_true", help="accept the deployment fee of a new chute")
    deploy.add_argument("--public", action="store_true", help="deploy publicly (needs the permission)")
    deploy.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation (asked only on a terminal)"
    )

    chutes_group = command(commands, "chutes", _group_help, "list, show and delete chutes")
    chutes_commands = chutes_group.add_subparsers(dest="subcommand", required=True, metavar="ACTION")
    listing = command(chutes_commands, "list", cmd_chutes_list, "list chutes")
    listing.add_argument("--name", help="only chutes whose name contains this")
    listing.add_argument("--limit", type=int, default=25)
    listing.add_argument("--page", type=int, default=0)
    listing.add_argument("--include-public", action="store_true", help="also list public chutes")
    get = command(chutes_commands, "get", cmd_chutes_get, "show a chute as JSON")
    get.add_argument("chute", metavar="NAME_OR_ID")
    delete = command(chutes_commands, "delete", cmd_chutes_delete, "delete a chute (by id)")
    delete.add_argument("chute_id", metavar="CHUTE_ID")
    delete.add_argument("--yes", "-y", action="store_true")

    share = command(commands, "share", cmd_share, "share a chute with another user (or stop sharing)")
    share.add_argument("--chute-id", required=True, help="chute id or name")
    share.add_argument("--user-id", required=True, help="user id or username")
    share.add_argument("--remove", action="store_true", help="unshare")

    warmup = command(commands, "warmup", cmd_warmup, "warm a chute up and follow its status until hot")
    warmup.add_argument("chute", metavar="NAME_OR_ID", help="chute name or id, or module:variable")

    keys = command(commands, "keys", _group_help, "manage API keys")
    keys_commands = keys.add_subparsers(dest="subcommand", required=True, metavar="ACTION")
    create = command(keys_commands, "create", cmd_keys_create, "create an API key")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true", help="full access")
    create.add_argument("--images", action="store_true", help="scope: all images")
    create.add_argument("--chutes", action="store_true", help="scope: all chutes")
    create.add_argument("--image-ids", nargs="+", metavar="ID", help="scope: these images")
    create.add_argument("--chute-ids", nargs="+", metavar="ID", help="scope: these chutes")
    create.add_argument("--action", choices=["read", "write", "delete", "invoke"], help="the scopes' action")
    create.add_argument(
        "--json-input", help='scopes as JSON: {"scopes": [{"object_type": ..., "action": ...}]}'
    )
    keys_list = command(keys_commands, "list", cmd_keys_list, "list API keys")
    keys_list.add_argument("--limit", type=int, default=25)
    keys_list.add_argument("--page", type=int, default=0)
    keys_get = command(keys_commands, "get", cmd_keys_get, "show an API key")
    keys_get.add_argument("key_id", metavar="ID")
    keys_delete = command(keys_commands, "delete", cmd_keys_delete, "delete an API key")
    keys_delete.add_argument("key_id", metavar="ID")
    keys_delete.add_argument("--yes", "-y", action="store_true")

    jobs = command(commands, "jobs", _group_help, "start, inspect and download jobs")
    jobs_commands = jobs.add_subparsers(dest="subcommand", required=True, metavar="ACTION")
    jobs_create = command(jobs_commands, "create", cmd_jobs_create, "start a job of a chute")
    jobs_create.add_argument("chute_id", metavar="CHUTE_ID")
    jobs_create.add_argument("method", metavar="METHOD", help="the job's name")
    jobs_create.add_argument("--data", help="the job's arguments, a JSON object")
    jobs_get = command(jobs_commands, "get", cmd_jobs_get, "show a job")
    jobs_get.add_argument("job_id", metavar="JOB_ID")
    download = command(jobs_commands, "download", cmd_jobs_download, "download an output file of a job")
    download.add_argument("job_id", metavar="JOB_ID")
    download.add_argument("file_id", metavar="FILE_ID")
    download.add_argument("-o", "--output", metavar="PATH", help="where to save it (default: its filename)")
    jobs_delete = command(jobs_commands, "delete", cmd_jobs_delete, "delete (cancel) a job")
    jobs_delete.add_argument("job_id", metavar="JOB_ID")
    jobs_delete.add_argument("--yes", "-y", action="store_true")
    return parser


def _group_help(args: argparse.Namespace) -> int:  # unreachable: sub-commands are required
    return 2


def fail(message: str) -> NoReturn:
    print(f"chutes: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from chutes.runner import ChuteLoadError

    try:
        status = args.handler(args)
    except (CommandError, ConfigError, ChuteLoadError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(status)


if __name__ == "__main__":
    main()
