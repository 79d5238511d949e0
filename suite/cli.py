"""The `chutes-suite` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.kit.settings import SERVICE_NAMES, get_settings
from suite.admin import add_commands as add_admin_commands
from suite.miner import add_command as add_miner_command


def _up(args: argparse.Namespace) -> int:
    from suite.up import up

    settings = get_settings()
    if args.replicas is not None:
        settings = settings.model_copy(update={"replicas": args.replicas})
    return up(settings)


def _codegen(_: argparse.Namespace) -> int:
    from suite.codegen import main

    main()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from services.kit.migrations import upgrade

    url = get_settings().database_url
    if not url:
        print("chutes-suite migrate: set CHUTES_DATABASE_URL", file=sys.stderr)
        return 2
    for name in args.services or SERVICE_NAMES:
        upgrade(name, url)
        print(f"{name}: migrated")
    return 0


def _revision(args: argparse.Namespace) -> int:
    from services.kit.migrations import revision

    url = get_settings().database_url
    if not url:
        print("chutes-suite revision: set CHUTES_DATABASE_URL (a scratch database)", file=sys.stderr)
        return 2
    revision(args.service, url, args.message)
    return 0


def _gateway_config(args: argparse.Namespace) -> int:
    from suite.up import write_gateway_config

    path = write_gateway_config(Path(args.out), get_settings())
    if args.descriptor:
        # Rendered from the descriptor set installed here; Envoy in a container reads the same
        # file where its image holds it (deploy/docker/gateway.Dockerfile).
        config = json.loads(path.read_text())
        if not _set_descriptor_path(config, args.descriptor):
            print("chutes-suite gateway-config: the config names no descriptor set", file=sys.stderr)
            return 1
        path.write_text(json.dumps(config, indent=1))
    print(path)
    return 0


def _set_descriptor_path(node: Any, path: str) -> int:
    """Point every `proto_descriptor` in an Envoy config at `path`; how many there were."""
    found = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "proto_descriptor":
                node[key] = path
                found += 1
            else:
                found += _set_descriptor_path(value, path)
    elif isinstance(node, list):
        found += sum(_set_descriptor_path(item, path) for item in node)
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chutes-suite", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_up = commands.add_parser("up", help="run the whole suite locally until Ctrl-C")
    run_up.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="processes of each service, behind the gateway (default: CHUTES_REPLICAS, or 1)",
    )
    run_up.set_defaults(run=_up)
    commands.add_parser("codegen", help="regenerate stubs and the descriptor set from protos/").set_defaults(
        run=_codegen
    )
    migrate = commands.add_parser("migrate", help="apply database migrations (CHUTES_DATABASE_URL)")
    migrate.add_argument(
        "services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(SERVICE_NAMES)} (default: all)"
    )
    migrate.set_defaults(run=_migrate)
    new_revision = commands.add_parser(
        "revision", help="write a service's next migration from its models (CHUTES_DATABASE_URL: scratch)"
    )
    new_revision.add_argument("service", choices=SERVICE_NAMES)
    new_revision.add_argument("-m", "--message", required=True)
    new_revision.set_defaults(run=_revision)
    config = commands.add_parser(
        "gateway-config", help="render the Envoy config for the configured addresses"
    )
    config.add_argument("--out", default="envoy.json")
    config.add_argument(
        "--descriptor",
        metavar="PATH",
        help="where Envoy reads the descriptor set (default: this installation's gateway/chutes.binpb)",
    )
    config.set_defaults(run=_gateway_config)
    add_admin_commands(commands)
    add_miner_command(commands)
    args = parser.parse_args(argv)
    sys.exit(args.run(args))
