"""The `chutes` command: run chutes locally, deploy them, and manage chutes, keys and jobs.

Requests are those of the published `chutes` CLI 0.6.9 (official-client-wire.md): same paths,
query strings, JSON bodies (compact, same key order), signing purposes and config.ini. Where this
command deliberately differs, `DIFFERENCES` in `chutes.cli.commands` says so; `chutes --help`
prints it.

One module a command group: `run`, `deploy`, `chutes_commands` (chutes list/get/delete, share),
`warmup`, `keys` and `jobs`; `api` is the API session and its errors, `output` the prompts and
tables, `commands` the argument parser. `main` is the console script (`chutes = chutes.cli:main`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from chutes.cli.api import CommandError
from chutes.cli.commands import build_parser
from chutes.config import ConfigError

__all__ = ["build_parser", "main"]


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
