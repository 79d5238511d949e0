"""The miner: one process per machine that registers its node and runs the registry's instances.

- `gpus.py`: the node's GPU inventory (NVML, or a declared simulated one);
- `instances.py`: one instance, a `chutes run` process, from launch to exit;
- `agent.py`: registration, the WatchWork stream, reports (MinerService, through the gateway);
- `cli.py`: `chutes-suite miner` / `chutes-miner` options.

Run it next to a suite: `chutes-suite miner --gateway http://127.0.0.1:8000 --api-key cpk_...
--simulate` (a user with the `miner` role). It stops every instance on SIGTERM/Ctrl-C and exits 0.
"""

from __future__ import annotations

from suite.miner.cli import add_command, main

__all__ = ["add_command", "main"]
