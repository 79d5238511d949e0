"""Seeding the suite's database with public chutes, as deploy writes them, for the read scenarios."""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .processes import CLOCK_TICKS

if TYPE_CHECKING:
    from .suite import Suite

#: How many public chutes the read scenarios run over, unless --seed-chutes says otherwise.
DEFAULT_SEED_CHUTES = 10_000
#: How many the uncached scenarios cycle over (more are seeded before the first of them): half as
#: many again as the registry's response cache holds (services/registry/views.py, 20,000), so
#: requests cycling over them in order never find their chute in that LRU cache.
UNCACHED_CHUTES = 30_000


@dataclass
class Seeded:
    count: int
    #: The chute GET scenarios read: the most invoked one (the list's first item).
    chute_id: str
    #: Every seeded chute's id, in seeding order (the uncached scenarios cycle over them).
    chute_ids: list[str]


SEED_SDK_VERSION = "0.6.9"
SEED_CODE = (
    "from chutes.chute import Chute, NodeSelector\n"
    "from chutes.image import Image\n\n"
    "chute = Chute(\n"
    '    username="{username}",\n'
    '    name="{name}",\n'
    '    image="{username}/bench-base:1.0",\n'
    "    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),\n"
    ")\n\n\n"
    '@chute.cord(public_api_path="/{function}", method="POST")\n'
    "async def {function}(self, text: str) -> str:\n"
    "    return text\n"
)
#: Selectors as deploy stores them (NodeSelector.stored()); each matches some GPUs.
SEED_SELECTORS = (
    {"gpu_count": 1, "min_vram_gb_per_gpu": 16, "max_hourly_price_per_gpu": None, "include": None,
     "exclude": ["b200", "mi300x"], "dynamic": False},
    {"gpu_count": 1, "min_vram_gb_per_gpu": 24, "max_hourly_price_per_gpu": None, "include": None,
     "exclude": None, "dynamic": False},
    {"gpu_count": 2, "min_vram_gb_per_gpu": 48, "max_hourly_price_per_gpu": None, "include": None,
     "exclude": ["mi300x"], "dynamic": False},
    {"gpu_count": 4, "min_vram_gb_per_gpu": 80, "max_hourly_price_per_gpu": None, "include": ["h100", "h200"],
     "exclude": None, "dynamic": False},
    {"gpu_count": 8, "min_vram_gb_per_gpu": 80, "max_hourly_price_per_gpu": 3.0, "include": None,
     "exclude": ["b200", "b300", "mi300x"], "dynamic": False},
)  # fmt: skip
SEED_FUNCTIONS = ("echo", "generate", "embed", "transcribe")
SEED_FAMILIES = ("echo", "llama", "qwen", "flux", "whisper", "mistral", "deepseek", "kokoro")


def _seed_cord(function: str) -> dict[str, Any]:
    """A cord as deploy stores it (the shape of tests/test_registry.py's deploy_body)."""
    return {
        "method": "POST", "path": f"/{function}", "public_api_path": f"/{function}",
        "public_api_method": "POST", "stream": False, "function": function, "passthrough": False,
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
                         "definitions": {}},
        "output_schema": {"type": "string"}, "output_content_type": "text/plain",
    }  # fmt: skip


def _uuid5(text: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


CHUTE_COLUMNS = (
    "chute_id", "user_id", "username", "name", "tagline", "readme", "tool_description", "image_id",
    "logo_id", "public", "standard_template", "cords", "jobs", "node_selector", "slug", "code", "filename",
    "ref_str", "version", "concurrency", "boost", "chutes_version", "revision", "openrouter", "discount",
    "max_instances", "scaling_threshold", "shutdown_after_seconds", "allow_external_egress",
    "encrypted_fs", "tee", "lock_modules", "immutable", "disabled", "invocation_count", "created_at",
    "updated_at",
)  # fmt: skip
INSTANCE_COLUMNS = ("instance_id", "chute_id", "version", "miner_hotkey", "region", "active", "verified",
                    "last_verified_at", "created_at", "updated_at")  # fmt: skip


def seed_rows(
    count: int, user_id: str, username: str, image_id: str, now: datetime.datetime, start: int = 0
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], str]:
    """`count` public chutes as deploy writes them (plus instances for the busiest and some others),
    and the id of the most invoked chute. Deterministic: the same rows for the same owner. `start`:
    the index of the first (more chutes after an earlier seeding)."""
    rng = random.Random(4 + start)
    chutes, instances, busiest = [], [], ("", -1)
    for index in range(start, start + count):
        name = f"bench-{SEED_FAMILIES[index % len(SEED_FAMILIES)]}-{index:05d}"
        function = SEED_FUNCTIONS[index % len(SEED_FUNCTIONS)]
        code = SEED_CODE.format(username=username, name=name, function=function)
        chute_id = _uuid5(f"{username}::chute::{name}")
        # Heavy-tailed like real usage; int32 in the API (registry.v1.Chute.invocation_count).
        invocations = min(int(rng.paretovariate(1.1) * 1_000) - 1_000, 2_000_000_000)
        created = now - datetime.timedelta(seconds=rng.randrange(365 * 86_400))
        updated = created + datetime.timedelta(
            seconds=rng.randrange(int((now - created).total_seconds()) + 1)
        )
        chutes.append((
            chute_id, user_id, username, name, f"Benchmark chute {index}: {function} over text",
            f"# {name}\n\nA seeded public chute for the read-path benchmarks: {function}.\n" * 3,
            None, image_id, None, True, None,
            json.dumps([_seed_cord(function)]), "[]", json.dumps(SEED_SELECTORS[index % len(SEED_SELECTORS)]),
            f"{username}-{name}", code, f"{name.replace('-', '_')}.py", f"{name.replace('-', '_')}:chute",
            _uuid5(f"{image_id}:initial:{code}"), rng.choice((None, 1, 8, 32)), None, SEED_SDK_VERSION,
            None, index % 50 == 0, 0.0, None, None, None, False, False, False, False, False, False,
            invocations, created, updated,
        ))  # fmt: skip
        busiest = max(busiest, (chute_id, invocations), key=lambda pair: pair[1])
        if invocations > 20_000 or rng.random() < 0.05:
            for number in range(rng.randint(1, 3)):
                verified = rng.random() < 0.8
                instances.append((
                    _uuid5(f"{chute_id}:instance:{number}"), chute_id, None, None,
                    rng.choice(("us-east", "eu-west", "ap-south")), True, verified,
                    updated if verified else None, updated, updated,
                ))  # fmt: skip
    return chutes, instances, busiest[0]


async def _seed(
    database_url: str, user_id: str, username: str, count: int, start: int = 0
) -> tuple[str, list[str]]:
    import asyncpg

    now = datetime.datetime.now(datetime.UTC)
    image_id = _uuid5(f"{username}/bench-base:1.0".lower())  # as services.registry.image_store.image_id_of
    chutes, instances, busiest = seed_rows(count, user_id, username, image_id, now, start)
    # The history trigger names its table unqualified, as the registry's own connections see it.
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "registry"})
    try:
        async with connection.transaction():
            if start == 0:
                await connection.execute(
                    "INSERT INTO registry.images (image_id, user_id, username, name, tag, public, status,"
                    " chutes_version, patch_version, build_started_at, build_completed_at)"
                    " VALUES ($1, $2, $3, 'bench-base', '1.0', true, 'built and pushed', $4, 'initial',"
                    " $5, $5)",
                    image_id, user_id, username, SEED_SDK_VERSION, now,
                )  # fmt: skip
            # COPY fires the history trigger too: one chute_history row per chute, as a deploy writes.
            await connection.copy_records_to_table(
                "chutes", schema_name="registry", columns=CHUTE_COLUMNS, records=chutes
            )
            await connection.copy_records_to_table(
                "instances", schema_name="registry", columns=INSTANCE_COLUMNS, records=instances
            )
        # Fresh statistics for the planner, and nothing left for autovacuum to do mid-measurement.
        await connection.execute(
            "VACUUM ANALYZE registry.images, registry.chutes, registry.instances, registry.chute_history"
        )
    finally:
        await connection.close()
    return busiest, [row[0] for row in chutes]


def seed(suite: Suite, count: int) -> Seeded:
    """`count` public chutes of one user (the harness's own) with one public image, in one COPY."""
    started = time.monotonic()
    credentials = suite.credentials()
    chute_id, ids = asyncio.run(_seed(suite.database_url(), credentials.user_id, credentials.username, count))
    print(f"seeded {count:,} public chutes in {time.monotonic() - started:.1f}s (GET reads {chute_id})")
    return Seeded(count, chute_id, ids)


def seed_up_to(suite: Suite, seeded: Seeded, total: int) -> None:
    """More public chutes after the first seeding, until there are `total` (the uncached scenarios;
    after the list scenarios, which run over --seed-chutes)."""
    if seeded.count >= total:
        return
    started = time.monotonic()
    credentials = suite.credentials()
    more = total - seeded.count
    _, ids = asyncio.run(
        _seed(suite.database_url(), credentials.user_id, credentials.username, more, start=seeded.count)
    )
    seeded.count, seeded.chute_ids = total, seeded.chute_ids + ids
    print(f"seeded {more:,} more public chutes in {time.monotonic() - started:.1f}s ({total:,} in all)")
    # Each new chute has a route: the registry reloads them and pushes them to Envoy, which keeps
    # both busy for a while; measuring before that settles would measure the push.
    url = suite.url("gateway", f"/chutes/{ids[-1]}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        time.sleep(1)
    # Envoy takes the new chutes' clusters in bursts on its main thread for a while after the
    # registry went quiet (a run measured during it charged the lean peer 1.2-1.5 ms of Envoy CPU
    # per request): wait until it holds every chute's cluster and none is warming.
    while time.monotonic() < deadline and not _envoy_holds(suite, total):
        time.sleep(1)
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        before = suite.snapshot()
        time.sleep(1)
        after = suite.snapshot()
        busy = max(after[name] - before[name] for name in ("registry", "envoy"))
        quiet = quiet + 1 if busy < CLOCK_TICKS // 10 else 0  # under 10% of a core
    print(f"  the gateway and the registry are idle again ({time.monotonic() - started:.1f}s after seeding)")
    asyncio.run(_warm(suite.database_url(), seeded.chute_ids))


def _envoy_holds(suite: Suite, chutes: int) -> bool:
    """Whether the gateway's Envoy has a cluster for each of `chutes` chutes, none warming."""
    admin = (suite.workdir / "data" / "envoy-admin-address").read_text().strip()
    wanted = r"^cluster_manager\.(active|warming)_clusters$"
    try:
        with urllib.request.urlopen(f"http://{admin}/stats?filter={wanted}", timeout=10) as reply:
            text = reply.read().decode()
    except OSError:
        return False
    stats = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    active = int(stats.get("cluster_manager.active_clusters", "0"))
    return active >= chutes and stats.get("cluster_manager.warming_clusters", "1") == "0"


async def _warm(database_url: str, chute_ids: list[str]) -> None:
    """Read every seeded chute (with its image and instances) once by index, so that PostgreSQL
    has their pages in its buffers before the uncached scenarios: otherwise whichever of them runs
    first pays for reading 30,000 rows in, and the others ride on it (the first run of the suite's
    uncached GET cost PostgreSQL 723 µs per request, the next ones 154-226)."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        # Index scans, as the GET's lookups: a sequential scan of a table larger than a quarter
        # of shared_buffers goes through a small ring and leaves the buffers cold.
        await connection.execute("SET enable_seqscan = off")
        for start in range(0, len(chute_ids), 1000):
            await connection.fetch(
                "SELECT c.*, i.*, (SELECT count(*) FROM registry.instances n WHERE n.chute_id = c.chute_id)"
                " FROM registry.chutes c JOIN registry.images i ON i.image_id = c.image_id"
                " WHERE c.chute_id = ANY($1::text[])",
                chute_ids[start : start + 1000],
            )
    finally:
        await connection.close()
