"""Benchmark harness: starts a private `chutes-suite up`, loads it with wrk and h2load, records results.

Run from the repository root:

    .venv/bin/python bench/run.py [--duration 10] [--connections 16] [--repeat 3] [--only NAME]

Every scenario is a row of SCENARIOS (scenarios.py); later work adds rows there. For each run the
harness records requests/s, p50/p99 latency, non-2xx responses and the CPU time per request of Envoy,
of every service process, of PostgreSQL and of the baseline server (from /proc/<pid>/stat), then
writes the medians over the repeats to the table in bench/README.md between the results markers and
prints the same table.

Scenarios that read chutes first seed the suite's database with --seed-chutes public chutes (once
per harness run). Baseline scenarios load bench/baselines/fastapi_chutes.py (FastAPI + SQLAlchemy ORM
+ asyncpg), lean ones bench/baselines/lean_chutes.py (FastAPI + raw asyncpg + orjson), which the
harness starts on free ports against the same database, after seeding; the read scenarios of the
suite and both baselines run interleaved (Scenario.interleave).
Invocation scenarios call examples/echo_chute.py on `up`'s local miner (on only when such a scenario
runs), deployed and warmed up once per harness run (invocation.py). The job transfer scenarios
move a 1 GiB file up and down through the gateway (transfer.py) and have a table of their own.

Exit codes: 0 ok, 1 the suite (or the baseline server) failed to start, 2 a load generator or the
baseline's packages are missing, or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import os
import shlex
import signal
import statistics
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn

from . import REPO, transfer
from .baseline import BASELINE_APPS, BaselineFailed, BaselineMissing, require_baseline, running_baseline
from .invocation import WARMS_UP, prepare
from .load import Load, Run, ToolMissing, require_tools, run_load
from .probe import check_same_json, probe
from .report import (
    HEADER,
    README,
    TRANSFERS_END,
    TRANSFERS_START,
    Result,
    describe,
    describe_cpu,
    existing_block,
    merge_rows,
    table_row,
    write_readme,
)
from .scenarios import SCENARIOS, Scenario
from .seed import DEFAULT_SEED_CHUTES, UNCACHED_CHUTES, seed, seed_up_to
from .suite import Suite, SuiteFailed, running_suite

#: Above this 1-minute load average before we start, something else is using the CPU we measure.
BUSY_LOAD_AVERAGE = 0.5


def warn_if_busy() -> None:
    # Load generator, Envoy and Python already share the cores; a fourth party skews every ratio.
    load = os.getloadavg()[0]
    if load > BUSY_LOAD_AVERAGE:
        print(f"warning: 1-minute load average is {load:.2f} before starting; results will be noisy")


def prepare_scenario(suite: Suite, scenario: Scenario, load: Load, workdir: Path) -> str | None:
    """Probe the scenario (and compare a baseline's JSON with its pair's) and warm it up; the answer."""
    print(f"{scenario.name}: {scenario.what}", flush=True)
    answer = probe(suite, scenario)
    if scenario.pair is not None:
        check_same_json(suite, scenario)
    # Warm-up, not recorded: first calls pay for connection setup, lazy imports and Envoy's upstream pool.
    # (The cold-start measurements have had theirs: the echo chute's own deploy and warmup.)
    if scenario.tool != "client" or scenario.client in WARMS_UP:
        run_load(suite, scenario, Load(1, load.connections, load.threads), workdir, warm_up=True)
    return answer


def bench_scenario(suite: Suite, scenario: Scenario, load: Load, repeat: int, workdir: Path) -> Result:
    answer = prepare_scenario(suite, scenario, load, workdir)
    repeat = scenario.repeat or repeat
    runs = []
    for index in range(1, repeat + 1):
        runs.append(run_load(suite, scenario, load, workdir))
        print(describe(runs[-1], index, repeat), flush=True)
    if repeat > 1:
        print(describe_cpu(runs), flush=True)
    return Result(scenario, runs, answer)


def bench_interleaved(
    suite: Suite, group: Sequence[Scenario], load: Load, repeat: int, workdir: Path
) -> list[Result]:
    """Scenarios measured in turns (run 1 of each, then run 2 of each, ...), so that what else the
    machine does falls on each of them alike; then each one's ratio of req/s to the first's."""
    answers = [prepare_scenario(suite, scenario, load, workdir) for scenario in group]
    runs: list[list[Run]] = [[] for _ in group]
    for index in range(1, repeat + 1):
        for scenario, done in zip(group, runs, strict=True):
            done.append(run_load(suite, scenario, load, workdir))
            print(f"{scenario.name}: {describe(done[-1], index, repeat).strip()}", flush=True)
    results = [Result(s, r, a) for s, r, a in zip(group, runs, answers, strict=True)]
    first = statistics.median(r.rps or 0.0 for r in runs[0])
    for result in results:
        if repeat > 1:
            print(f"{result.scenario.name}: {describe_cpu(result.runs).strip()}", flush=True)
        rps = statistics.median(r.rps or 0.0 for r in result.runs)
        whole = statistics.median(sum(v for k, v in r.cpu_us.items() if k != "loadgen") for r in result.runs)
        ratio = f"{first / rps:.2f}x" if rps else "-"
        print(
            f"  {result.scenario.name}: {rps:,.0f} req/s, whole stack {whole:,.0f} µs/req;"
            f" {group[0].name} / this: {ratio} req/s",
            flush=True,
        )
    return results


def _batches(scenarios: Sequence[Scenario]) -> list[list[Scenario]]:
    """The scenarios in order, neighbours with the same `interleave` key together."""
    batches: list[list[Scenario]] = []
    for scenario in scenarios:
        if batches and scenario.interleave is not None and batches[-1][-1].interleave == scenario.interleave:
            batches[-1].append(scenario)
        else:
            batches.append([scenario])
    return batches


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="load generator threads (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario; the median is reported")
    parser.add_argument(
        "--only", action="append", metavar="NAME",
        help="run only this scenario (repeatable; shell-style patterns such as 'invoke-*' too)",
    )  # fmt: skip
    parser.add_argument(
        "--seed-chutes", type=int, default=DEFAULT_SEED_CHUTES, metavar="N",
        help=f"public chutes seeded for the chute-reading scenarios (default {DEFAULT_SEED_CHUTES:,})",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print, leave bench/README.md alone")
    args = parser.parse_args(argv)
    for pattern in args.only or ():
        if not any(fnmatch.fnmatchcase(s.name, pattern) for s in SCENARIOS):
            parser.error(f"--only {pattern}: no such scenario ({', '.join(s.name for s in SCENARIOS)})")
    if min(args.duration, args.repeat, args.threads, args.seed_chutes) < 1 or args.connections < args.threads:
        parser.error("duration, repeat, threads and seed-chutes must be >= 1, and connections >= threads")
    return args


def _stop_on_sigterm(signum: int, _frame: object) -> NoReturn:
    # Turn SIGTERM into an exception so the finally blocks stop the suite.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    scenarios = [
        s for s in SCENARIOS if not args.only or any(fnmatch.fnmatchcase(s.name, p) for p in args.only)
    ]
    command = shlex.join([".venv/bin/python", "bench/run.py", *argv])
    load = Load(args.duration, args.connections, args.threads)
    try:
        require_tools(scenarios)
        require_baseline(scenarios)
    except (ToolMissing, BaselineMissing) as missing:
        print(missing, file=sys.stderr)
        return 2
    warn_if_busy()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    results, transfers = [], []
    # One suite per set of settings (most scenarios: the default one), in the order they first come.
    suites: dict[tuple[tuple[str, str], ...], list[Scenario]] = {}
    for scenario in scenarios:
        suites.setdefault(scenario.settings, []).append(scenario)
    with tempfile.TemporaryDirectory(prefix="chutes-bench-load-") as loads:
        try:
            for settings, group in suites.items():
                miner = any(s.invocation for s in group)
                with running_suite(miner, dict(settings)) as suite, ExitStack() as baseline:
                    for batch in _batches(group):
                        for scenario in batch:
                            if scenario.seeded and suite.seeded is None:
                                suite.seeded = seed(suite, args.seed_chutes)
                            if scenario.uncached and suite.seeded is not None:
                                seed_up_to(suite, suite.seeded, UNCACHED_CHUTES)
                            if scenario.invocation and suite.chute is None:
                                suite.chute = prepare(suite, args.connections)
                            if scenario.target in BASELINE_APPS and scenario.target not in suite.baselines:
                                server = baseline.enter_context(running_baseline(suite, scenario.target))
                                suite.baselines[scenario.target] = server
                        if len(batch) > 1:
                            results += bench_interleaved(suite, batch, load, args.repeat, Path(loads))
                            continue
                        [scenario] = batch
                        if scenario.client in ("upload", "download"):
                            if suite.job_chute is None:
                                suite.job_chute = transfer.prepare(suite)
                            transfers.append(transfer.bench(suite, scenario, args.repeat))
                            continue
                        results.append(bench_scenario(suite, scenario, load, args.repeat, Path(loads)))
        except SuiteFailed as failure:
            tail = f"--- chutes-suite up stderr (tail) ---\n{failure.stderr_tail}"
            print(f"the suite failed to start: {failure}\n{tail}", file=sys.stderr)
            return 1
        except BaselineFailed as failure:
            print(f"{failure}\n--- baseline output (tail) ---\n{failure.output_tail}", file=sys.stderr)
            return 1
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    rows = {r.scenario.name: table_row(r, command, date) for r in results}
    moved = {r.scenario.name: transfer.table_row(r, command, date) for r in transfers}
    if rows:
        print("\n" + "\n".join([*HEADER, *rows.values()]))
    if moved:
        print("\n" + "\n".join([*transfer.HEADER, *moved.values()]))
    if not args.no_write:
        if rows:
            write_readme(merge_rows(existing_block(), rows))
        if moved:
            markers = (TRANSFERS_START, TRANSFERS_END)
            write_readme(merge_rows(existing_block(markers), moved), transfer.HEADER, markers)
        print(f"\nupdated {README.relative_to(REPO)}")
    return 0
