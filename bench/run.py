"""Benchmark harness: starts a private `chutes-suite up`, loads it with wrk and h2load, records results.

Run from the repository root:

    .venv/bin/python bench/run.py [--duration 10] [--connections 16] [--repeat 3] [--only NAME]

The harness itself is the package bench/harness/ (see its __init__ for what each module does); this
file is its entry point. Running it as a script puts bench/ first on sys.path, so `harness` imports
from there. Exit codes and options: bench/README.md, or --help.
"""

import sys

from harness.cli import main

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # the suite is already stopped by then; spare the traceback
        sys.exit(130)
