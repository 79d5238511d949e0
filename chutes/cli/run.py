"""`chutes run`: serve a chute over HTTP, or run one of its jobs, in this process."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from chutes.cli.api import CommandError


def cmd_run(args: argparse.Namespace) -> int:
    # Both must be set before the chute module (and the SDK) is imported: the SDK decides at
    # import/decoration time whether cords run here (remote) or call the API (local).
    os.environ["CHUTES_EXECUTION_CONTEXT"] = "REMOTE"
    if args.dev:
        os.environ["CHUTES_DEV_MODE"] = "true"
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    from chutes.runner import JobRunError, job_data_of, load_chute, run_job, serve

    # The published CLI's --dev-job-method/--dev-job-data-path are our --job-method/--job-data.
    if args.dev_job_method or args.dev_job_data_path:
        if not args.dev:
            raise CommandError("--dev-job-method and --dev-job-data-path need --dev")
        if args.job_method or args.job_data:
            raise CommandError(
                "give --dev-job-method/--dev-job-data-path or --job-method/--job-data, not both"
            )
        if not args.dev_job_method:
            raise CommandError("--dev-job-data-path needs --dev-job-method")
        args.job_method = args.dev_job_method
        args.job_data = f"@{args.dev_job_data_path}" if args.dev_job_data_path else None

    job_options = (args.job_id, args.job_data, args.job_status_url)
    if args.job_method is None and any(option is not None for option in job_options):
        raise CommandError("--job-id, --job-data and --job-status-url need --job-method")
    try:
        data = job_data_of(args.job_data) if args.job_method else {}
    except JobRunError as error:
        raise CommandError(str(error)) from None
    loaded = load_chute(args.chute)
    if args.job_method is None:
        code = loaded.file.read_bytes() if loaded.file is not None else None
        return serve(loaded.chute, args.host, args.port, code)

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
