"""The `chutes` command line: its commands, their options and help texts, each bound to its handler."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from chutes.cli.api import VERSION
from chutes.cli.build import BUILDERS, cmd_build
from chutes.cli.chutes_commands import cmd_chutes_delete, cmd_chutes_get, cmd_chutes_list, cmd_share
from chutes.cli.deploy import cmd_deploy
from chutes.cli.images import cmd_images_delete, cmd_images_get, cmd_images_list
from chutes.cli.jobs import cmd_jobs_create, cmd_jobs_delete, cmd_jobs_download, cmd_jobs_get
from chutes.cli.keys import cmd_keys_create, cmd_keys_delete, cmd_keys_get, cmd_keys_list
from chutes.cli.run import cmd_run
from chutes.cli.warmup import cmd_warmup

DIFFERENCES = """\
differences from the published CLI:
  - every API error exits non-zero (the published CLI exits 0 after logging most errors);
  - CHUTES_API_URL wins over [api] base_url, and there is no default URL;
  - an API key (CHUTES_API_KEY or [auth] api_key) is used instead of hotkey signing when set;
  - prompts appear only when stdin is a terminal (--yes skips them);
  - chute references may be paths (examples/echo_chute:chute);
  - `jobs` commands exist (the published CLI has none)."""


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
    # The published CLI's names for a local job run, and its other options.
    run.add_argument("--dev-job-method", help="with --dev: run this job (same as --job-method)")
    run.add_argument(
        "--dev-job-data-path", metavar="PATH", help="with --dev: the job's arguments from this JSON file"
    )
    run.add_argument("--debug", action="store_true", help="debug logging")
    run.add_argument(
        "--logging-port",
        type=int,
        default=8001,
        help="accepted for compatibility: instances here have no separate log server",
    )
    # Set by the platform's validator when it starts an instance; nothing to do with them here,
    # and a launch command carrying them must not fail.
    run.add_argument("--miner-ss58", help=argparse.SUPPRESS)
    run.add_argument("--validator-ss58", help=argparse.SUPPRESS)

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
    deploy.add_argument(
        "--logo", metavar="PATH", help="an image file uploaded as the chute's logo (POST /logos/)"
    )
    deploy.add_argument(
        "--config-path", metavar="PATH", help="the config file to use (like CHUTES_CONFIG_PATH)"
    )
    deploy.add_argument("--debug", action="store_true", help="debug logging")

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

    build = command(
        commands,
        "build",
        cmd_build,
        "build a chute's image with docker/podman, or write its Dockerfile and say what to run",
    )
    build.add_argument("chute", help="module:variable naming an Image, or a chute built on one")
    build.add_argument("--builder", choices=BUILDERS, help="default: docker, else podman, if installed")
    build.add_argument("--output", metavar="DIR", help="write the Dockerfile and build context here (kept)")
    build.add_argument(
        "--include-cwd", action="store_true", help="put the whole working directory in the context"
    )
    build.add_argument("--public", action="store_true", help="register the image as public (in the hint)")
    # The published CLI's options, accepted: builds are always local here, and finish before it exits.
    build.add_argument("--local", action="store_true", help=argparse.SUPPRESS)
    build.add_argument("--wait", action="store_true", help=argparse.SUPPRESS)
    build.add_argument("--logo", help=argparse.SUPPRESS)
    build.add_argument("--config-path", help=argparse.SUPPRESS)
    build.add_argument("--debug", action="store_true", help="debug logging")

    images = command(commands, "images", _group_help, "list, show and delete images")
    images_commands = images.add_subparsers(dest="subcommand", required=True, metavar="ACTION")
    images_list = command(images_commands, "list", cmd_images_list, "list images")
    images_list.add_argument("--name", help="only images whose name contains this")
    images_list.add_argument("--limit", type=int, default=25)
    images_list.add_argument("--page", type=int, default=0)
    images_list.add_argument("--include-public", action="store_true", help="also list public images")
    images_get = command(images_commands, "get", cmd_images_get, "show an image")
    images_get.add_argument("image", metavar="NAME_OR_ID", help="image id or [username/]name:tag")
    images_delete = command(images_commands, "delete", cmd_images_delete, "delete an image")
    images_delete.add_argument("image", metavar="IMAGE_ID")
    images_delete.add_argument("--yes", "-y", action="store_true")

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
