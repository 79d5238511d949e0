"""The results: per-run lines, the table of medians, and its rows in bench/README.md."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from . import REPO
from .load import Run
from .scenarios import SCENARIOS, Scenario

README = REPO / "bench" / "README.md"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"
#: The job file transfers' table (transfer.py): other columns, same merging.
TRANSFERS_START = "<!-- transfers:start -->"
TRANSFERS_END = "<!-- transfers:end -->"


@dataclass
class Result:
    scenario: Scenario
    runs: list[Run]
    #: What one request answers (e.g. "HTTP 501", "grpc UNIMPLEMENTED"): non-2xx alone hides gRPC errors.
    #: None where no single request was sent (the cold-start measurements).
    probe: str | None


HEADER = (
    "| scenario | req/s median | p50 ms | p99 ms | non-2xx | Envoy µs/req | service µs/req"
    " | Postgres µs/req | whole stack µs/req | date | command |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
)
#: Rows written before the Postgres column existed have this many cells; merge_rows pads them.
_CELLS_WITHOUT_POSTGRES = 10


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _rate(rates: Sequence[float]) -> str:
    """Median req/s; one decimal below 100 (the sequential streaming rows), "-" without a rate."""
    if not rates:
        return "-"
    median = _median(rates)
    return f"{median:,.1f}" if median < 100 else f"{median:,.0f}"


def table_row(result: Result, command: str, date: str) -> str:
    runs, serving = result.runs, result.scenario.serving

    def cpu(name: str | None) -> str:
        if name is None or not result.scenario.cpu:
            return "-"
        return f"{_median([r.cpu_us.get(name, 0.0) for r in runs]):.0f}"

    non_2xx = f"{_median([r.non_2xx for r in runs]):,.0f}"
    if result.probe not in (None, "HTTP 200", "grpc OK"):
        non_2xx += f" (each: {result.probe})"
    errors = _median([r.errors for r in runs])
    if errors and result.scenario.client != "ingest":  # ingestion: lost entries, in `records`
        non_2xx += f" ({errors:,.0f} failed)"
    accounted = [r.records for r in runs if r.records is not None]
    if accounted:
        # All runs, not a median: one lost record is a failure.
        expected, rows = sum(e for e, _ in accounted), sum(r for _, r in accounted)
        non_2xx += f" (records: {rows:,} of {expected:,}, {len(accounted)} runs)"
    rates = [r.rps for r in runs if r.rps is not None]
    whole = _median([sum(v for k, v in r.cpu_us.items() if k != "loadgen") for r in runs])
    cells = [
        result.scenario.name,
        _rate(rates),
        f"{_median([r.p50_ms for r in runs]):.2f}" if result.scenario.latency else "-",
        f"{_median([r.p99_ms for r in runs]):.2f}" if result.scenario.latency else "-",
        non_2xx,
        cpu("envoy"),
        cpu(serving) if serving is None or not result.scenario.cpu else f"{cpu(serving)} ({serving})",
        cpu("postgres"),
        # Envoy, every service, the database, the baseline server and the chute's instance: what the
        # request cost, wherever the work happened.
        f"{whole:.0f}" if result.scenario.cpu else "-",
        date,
        f"`{command}`",
    ]
    return "| " + " | ".join(cells) + " |"


def merge_rows(old_block: str, new_rows: dict[str, str]) -> list[str]:
    """Rows of the new table: fresh rows replace old ones by scenario; rows of scenarios not run stay."""
    rows: dict[str, str] = {}
    for line in old_block.splitlines():
        if line.startswith("|") and not line.startswith(("| scenario ", "|---")):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            if len(cells) == _CELLS_WITHOUT_POSTGRES:  # an older row: no Postgres measurement
                cells.insert(7, "-")
                line = "| " + " | ".join(cells) + " |"
            rows[cells[0]] = line
    rows.update(new_rows)
    order = [s.name for s in SCENARIOS]
    return sorted(rows.values(), key=lambda row: _order_of(row, order))


def _order_of(row: str, order: list[str]) -> int:
    name = row.split("|")[1].strip()
    return order.index(name) if name in order else len(order)


def write_readme(
    rows: list[str],
    header: Sequence[str] = HEADER,
    markers: tuple[str, str] = (RESULTS_START, RESULTS_END),
) -> None:
    first, last = markers
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{first}\n{last}\n"
    head, start, rest = text.partition(first)
    _, end, tail = rest.partition(last)
    if not start or not end:
        raise SystemExit(f"{README}: markers {first} / {last} not found; not touching it")
    block = "\n".join([*header, *rows])
    README.write_text(f"{head}{first}\n{block}\n{last}{tail}")


def existing_block(markers: tuple[str, str] = (RESULTS_START, RESULTS_END)) -> str:
    if not README.exists():
        return ""
    return README.read_text().partition(markers[0])[2].partition(markers[1])[0]


def describe_cpu(runs: Sequence[Run]) -> str:
    """The median CPU µs/req of every process over the runs (the table shows only some)."""
    names = sorted({name for run in runs for name in run.cpu_us})
    medians = {name: _median([run.cpu_us.get(name, 0.0) for run in runs]) for name in names}
    return "  median CPU µs/req: " + " ".join(f"{n} {us:.0f}" for n, us in medians.items() if us >= 0.5)


def describe(run: Run, index: int, repeat: int) -> str:
    cpu = " ".join(f"{name} {us:.0f}" for name, us in sorted(run.cpu_us.items()) if us >= 0.5)
    rate = "-" if run.rps is None else f"{run.rps:,.0f}"
    return (
        f"  run {index}/{repeat}: {rate} req/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
        f"{run.requests:,} requests, non-2xx {run.non_2xx:,}, errors {run.errors:,} | CPU µs/req: {cpu}"
    )
