"""The benchmark harness behind bench/run.py, one module per part of a run.

* scenarios: what is measured (the scenario table).
* processes: free ports, and process discovery and CPU time from /proc.
* credentials: the harness's own user, API key and hotkey signatures.
* suite: the private `chutes-suite up` (services, Envoy, embedded PostgreSQL) it measures.
* seed: the public chutes the chute-reading scenarios read.
* baseline: the FastAPI server of bench/baselines/ the baseline scenarios load.
* load: the wrk and h2load runs, their output parsed, CPU per request.
* records: invocation records: access-log messages streamed straight to the metrics service, and
  the rows of a run through the gateway counted against Envoy's counters.
* probe: one request per scenario, and the baseline's JSON compared with the gateway's.
* report: the results table, printed and written to bench/README.md.
* cli: the arguments and the order of a run (one suite per set of scenario settings).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
