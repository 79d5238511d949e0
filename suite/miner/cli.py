"""`chutes-suite miner` and `chutes-miner`: the options, and running the miner until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

DEFAULT_GATEWAY = "http://127.0.0.1:8000"

_HELP = "run this machine's miner: register its node, launch the instances the registry asks for"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ
    parser.add_argument(
        "--gateway",
        default=env.get("CHUTES_MINER_GATEWAY", DEFAULT_GATEWAY),
        help="the suite's gateway URL; gRPC goes to its host:port (env CHUTES_MINER_GATEWAY; "
        f"default {DEFAULT_GATEWAY})",
    )
    parser.add_argument(
        "--api-key",
        default=env.get("CHUTES_MINER_API_KEY"),
        help="API key of a user with the miner role (env CHUTES_MINER_API_KEY)",
    )
    parser.add_argument("--name", default=socket.gethostname(), help="the node's name (default: hostname)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="IP address at which the gateway reaches instances"
    )
    parser.add_argument("--work-dir", default=".data/miner", help="instances and state (default .data/miner)")
    parser.add_argument(
        "--gpus",
        help="declare GPUs on a machine without NVIDIA GPUs: KEY[:COUNT][,...], e.g. a100:2,h100:1 "
        "(the node is marked simulated)",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="no NVIDIA GPUs: declare a simulated inventory (one a100 unless --gpus says otherwise)",
    )
    parser.add_argument(
        "--software-tee",
        action="store_true",
        default=env.get("CHUTES_MINER_SOFTWARE_TEE", "").lower() in ("1", "true", "yes"),
        help="offer the software TEE on a machine without TDX: TEE chutes run here and their evidence "
        "is signed by a node key kept in the work dir (a distinct trust root, never TDX; env "
        "CHUTES_MINER_SOFTWARE_TEE)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds an instance may take to listen before it counts as failed (default 120)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds a stopping instance may take to finish in-flight calls before SIGKILL (default 30)",
    )


def run(args: argparse.Namespace) -> int:
    from suite.miner.agent import Miner, MinerError, MinerSettings, grpc_target
    from suite.miner.gpus import InventoryError, resolve_inventory

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s miner: %(message)s", stream=sys.stderr)
    log = logging.getLogger("chutes.miner")
    try:
        grpc_target(args.gateway)
        inventory = resolve_inventory(args.gpus, args.simulate)
    except (InventoryError, MinerError) as error:
        log.error("%s", error)
        return 2
    settings = MinerSettings(
        gateway=args.gateway,
        api_key=args.api_key or None,
        name=args.name,
        host=args.host,
        work_dir=Path(args.work_dir).resolve(),
        inventory=inventory,
        ready_timeout=args.ready_timeout,
        stop_timeout=args.stop_timeout,
        software_tee=args.software_tee,
    )
    if not settings.api_key:
        log.warning("no --api-key (CHUTES_MINER_API_KEY): the registry will refuse an anonymous miner")
    return asyncio.run(Miner(settings).run())


def add_command(commands: Any) -> None:
    """Add `miner` to `chutes-suite`'s subcommands (the subparsers action)."""
    parser = commands.add_parser("miner", help=_HELP, description=_HELP)
    add_arguments(parser)
    parser.set_defaults(run=run)


def main(argv: list[str] | None = None) -> None:
    """The `chutes-miner` console script."""
    parser = argparse.ArgumentParser(prog="chutes-miner", description=_HELP)
    add_arguments(parser)
    sys.exit(run(parser.parse_args(argv)))
