"""Fixture for tests/test_chute_run.py: a chute with one job that writes output files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chutes.chute import Chute, NodeSelector

HOOKS = Path(os.environ["RUN_HOOKS_FILE"])

chute = Chute(
    username="runner",
    name="run-jobs",
    image="runner/base:1.0",
    node_selector=NodeSelector(gpu_count=1),
)


def record(event: str) -> None:
    with HOOKS.open("a") as hooks:
        hooks.write(event + "\n")


@chute.on_startup()
async def ready(self) -> None:
    record("startup")


@chute.on_shutdown()
async def done(self) -> None:
    record("shutdown")


@chute.job(timeout=60)
async def train(self, output_dir: str, epochs: int = 1, fail: bool = False) -> dict[str, Any]:
    if fail:
        raise ValueError("diverged")
    out = Path(output_dir)
    (out / "weights.bin").write_bytes(bytes(range(256)) * epochs)
    (out / "logs").mkdir()
    (out / "logs" / "train.txt").write_text(f"{epochs} epochs, job {os.environ.get('CHUTES_JOB_ID')}\n")
    return {"epochs": epochs, "loss": 0.5 / epochs}
