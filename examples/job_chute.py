"""A chute with one job that needs no GPU: it "trains" for a few steps, writes two output files
and returns a summary.

A job is a one-shot run of a chute's `@chute.job` method on an instance of its own: the owner
creates it (`chutes jobs create`), a miner runs it, and the instance reports its result and
uploads every file the method left in `output_dir`; the owner then reads the job and downloads
the files (`chutes jobs get|download`).

Run the job locally against any job API (`--job-status-url` is what the platform hands the
instance; without it the job runs and prints its result):

    chutes run examples/job_chute:chute --job-method train --job-data '{"steps": 3}'

Deploy it on a suite where `alice` owns the image `alice/cli-base:1.0` (README: "Write, run and
deploy a chute"), then start a job:

    CHUTES_USERNAME=alice chutes deploy examples/job_chute:chute --accept-fee
    chutes jobs create CHUTE_ID train --data '{"steps": 3}'
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from chutes.chute import Chute, NodeSelector

USERNAME = os.environ.get("CHUTES_USERNAME", "alice")
IMAGE = os.environ.get("CHUTES_IMAGE", f"{USERNAME}/cli-base:1.0")

chute = Chute(
    username=USERNAME,
    name="job-example",
    image=IMAGE,
    tagline="Trains a toy model as a job; runs on a CPU.",
    readme="An example job chute: `train` writes `model.bin` and `logs/train.jsonl` and returns a summary.",
    node_selector=NodeSelector(gpu_count=1),
)


@chute.job(timeout=300, upload=True)
async def train(self, output_dir: str, steps: int = 3, seed: int = 0, sleep: float = 0) -> dict[str, Any]:
    """Every file left under `output_dir` is uploaded when the job completes, by its path
    relative to `output_dir` (here `model.bin` and `logs/train.jsonl`). `sleep` makes it take
    that many seconds, like a real training run."""
    steps = int(steps)
    await asyncio.sleep(float(sleep))
    out = Path(output_dir)
    (out / "logs").mkdir(exist_ok=True)
    loss = 1.0
    with (out / "logs" / "train.jsonl").open("w") as log:
        for step in range(1, steps + 1):
            loss = round(loss * 0.5, 6)
            log.write(json.dumps({"step": step, "loss": loss}) + "\n")
    # A deterministic "model": the same steps and seed give the same bytes.
    weights = bytes((seed + step * 31 + i) % 256 for step in range(steps) for i in range(256))
    (out / "model.bin").write_bytes(weights)
    return {"steps": steps, "loss": loss, "model_bytes": len(weights)}
