"""Miner means: per routable instance, averages over its invocations of the last day, rebuilt
whole every `miner_means_seconds` (the real API's `llm_means`, rebuilt by a cron every 10
minutes), and their pages: the index of vLLM chutes (HTML) and one chute's means as JSON, CSV or
an HTML table (GET /chutes/miner_means[/{chute_id}[.ext]]).

Which instances run, and on which miner, is the registry's (ListFleet over gRPC); the averages
are over this service's records (store.replace_miner_means says what they hold today).
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import grpc

from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
from services.kit.db import Database, log_failure
from services.metrics import store

log = logging.getLogger(__name__)

REGISTRY_SECONDS = 5.0
#: Formats of GET /chutes/miner_means/{chute_id}[.ext]; no extension is the HTML table.
FORMATS = ("json", "csv", "html")
CSV_HEADER = ("instance_id", "miner_hotkey", "avg_tps", "avg_output_tokens")


def split_extension(value: str) -> tuple[str, str | None]:
    """`abc.csv` -> (`abc`, `csv`); `abc` -> (`abc`, None): the gateway hands both in one segment."""
    chute_id, dot, extension = value.rpartition(".")
    return (chute_id, extension.lower()) if dot else (value, None)


class MinerMeans:
    def __init__(
        self, db: Database, registry: internal_pb2_grpc.RegistryInternalServiceAsyncStub, every_seconds: float
    ) -> None:
        self.db = db
        self.registry = registry
        self.every_seconds = every_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await self.rebuild()
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "miner means: the registry did not answer (%s); next run as planned", error.code()
                )
            except Exception:
                log_failure(log, "miner means: rebuilding failed")
            await asyncio.sleep(self.every_seconds)

    async def rebuild(self) -> int:
        fleet = await self.registry.ListFleet(internal_pb2.ListFleetRequest(), timeout=REGISTRY_SECONDS)
        hotkeys = {i.instance_id: i.miner_hotkey for c in fleet.chutes for i in c.instances if i.active}
        async with self.db.raw() as connection:
            return await store.replace_miner_means(connection, hotkeys)


# ---- the pages ---------------------------------------------------------------------------------


def means_json(rows: Sequence[Any]) -> bytes:
    return json.dumps(
        [
            {
                "miner_hotkey": r["miner_hotkey"],
                "instance_id": r["instance_id"],
                "avg_tps": r["avg_tps"],
                "avg_output_tokens": r["avg_output_tokens"],
            }
            for r in rows
        ]
    ).encode()


def means_csv(rows: Sequence[Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows([r[column] for column in CSV_HEADER] for r in rows)
    return out.getvalue().encode()


def _page(title: str, body: str) -> bytes:
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}</body></html>\n"
    ).encode()


def means_html(chute_id: str, rows: Sequence[Any]) -> bytes:
    cells = "".join(
        f"<tr><td>{html.escape(r['miner_hotkey'])}</td><td>{html.escape(r['instance_id'])}</td>"
        f"<td>{r['avg_tps']:.2f}</td><td>{r['avg_output_tokens']:.2f}</td></tr>\n"
        for r in rows
    )
    table = (
        "<table>\n<tr><th>Hotkey</th><th>Instance ID</th><th>Avg TPS</th><th>Avg Output Tokens</th></tr>\n"
        f"{cells}</table>\n"
    )
    return _page(f"Miner means of chute {chute_id}", table)


def index_html(base_url: str, chutes: Sequence[internal_pb2.ChuteFleet]) -> bytes:
    items = "".join(
        f'<li><a href="{html.escape(base_url)}/chutes/miner_means/{html.escape(c.chute_id)}">'
        f"{html.escape(c.name)}</a> ({c.invocation_count} invocations)</li>\n"
        for c in chutes
    )
    return _page("Miner means of vLLM chutes", f"<ul>\n{items}</ul>\n")
