"""The lean peer of the registry's read paths: what a team that cares about speed writes on the real
API's stack (issue 14).

`GET /chutes/{chute_id_or_name}` and `GET /chutes/` on FastAPI with uvicorn (one worker, uvloop,
httptools, no access log), a raw asyncpg pool and the suite's own SQL (services/registry/store.py's
column lists and subqueries): one statement per GET that returns the whole answer (chute, image,
instances, live bounty and manual boost), a `count(*)` and one page statement for the list. The
rows become dicts by hand and orjson writes them: no ORM, no pydantic response model, no cache.
The JSON is the gateway's for the same chute (bench/run.py compares them before measuring).

    .venv/bin/pip install fastapi uvicorn httptools orjson
    .venv/bin/python bench/baselines/lean_chutes.py --database-url postgresql://... --port 8000

The URL may also come from BASELINE_DATABASE_URL. Anonymous reads only, as the benchmark makes them.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from chutes.chute import NodeSelector
from services.registry import bounties
from services.registry.pricing import estimated_price, legacy_billing, live_factors, multiplier_factors
from services.registry.store import CHUTE_SELECT, IMAGE_SELECT, INSTANCES_SELECT, LIVE_SELECT

DATABASE_URL_ENV = "BASELINE_DATABASE_URL"
LOGO_CDN = "https://logos.chutes.ai/logos"
SCHEMA_KEYS = ("input_schema", "minimal_input_schema", "output_schema")
NOT_FOUND = orjson.dumps({"detail": "Chute not found, or does not belong to you"})
ORJSON = orjson.OPT_UTC_Z

#: The registry's anonymous read, whole: the chute (by id or exact name, the platform's first), its
#: image, its instances and what changes without a write to it, in one round trip.
GET_SQL = f"""
SELECT {CHUTE_SELECT}, {IMAGE_SELECT}, {INSTANCES_SELECT}, {LIVE_SELECT}
FROM chutes c JOIN images i ON i.image_id = c.image_id
WHERE (c.chute_id = $1 OR c.name = $1) AND c.discoverable
ORDER BY (c.username = 'chutes') DESC, c.created_at
LIMIT 1
"""
COUNT_SQL = "SELECT count(*) FROM chutes c WHERE c.discoverable"
PAGE_SQL = f"""
SELECT {CHUTE_SELECT}, {IMAGE_SELECT}, {INSTANCES_SELECT}, {LIVE_SELECT}
FROM chutes c JOIN images i ON i.image_id = c.image_id
WHERE c.discoverable
ORDER BY c.invocation_count DESC, c.chute_id
LIMIT $1 OFFSET $2
"""


def logo_url(logo_id: str | None) -> str:
    return f"{LOGO_CDN}/{logo_id}.webp" if logo_id else ""


def cord_ref_id(cords: list[dict[str, Any]], name: str, template: str | None) -> str:
    text = json.dumps(cords, separators=(",", ":"))
    if template == "vllm":
        text = text.replace(f'"default":{json.dumps(name)}', '"default":""')
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


def without_none(values: dict[str, Any]) -> dict[str, Any]:
    # The transcoder omits unset optional fields (proto3 `optional`), it never prints null.
    return {k: v for k, v in values.items() if v is not None}


def cord_dict(cord: Mapping[str, Any]) -> dict[str, Any]:
    return without_none(
        {
            "method": cord.get("method") or "",
            "path": cord.get("path") or "",
            "function": cord.get("function") or "",
            "stream": bool(cord.get("stream")),
            "passthrough": bool(cord.get("passthrough")),
            "public_api_path": cord.get("public_api_path") or "",
            "public_api_method": cord.get("public_api_method") or "",
            "input_schema": cord.get("input_schema"),
            "output_schema": cord.get("output_schema"),
            "minimal_input_schema": cord.get("minimal_input_schema"),
            "output_content_type": cord.get("output_content_type") or "",
        }
    )


def job_dict(job: Mapping[str, Any]) -> dict[str, Any]:
    ports = [
        without_none(
            {"name": p.get("name") or "", "port": p.get("port") or 0, "proto": p.get("proto") or "",
             "default": p.get("default")}
        )
        for p in job.get("ports") or []
    ]  # fmt: skip
    return without_none(
        {"name": job.get("name") or "", "upload": bool(job.get("upload")), "timeout": job.get("timeout"),
         "disk_gb": job.get("disk_gb"), "ports": ports}
    )  # fmt: skip


def user_dict(username: str, user_id: str) -> dict[str, Any]:
    return {"username": username, "user_id": user_id, "logo_id": "", "logo": ""}


def chute_dict(
    row: Mapping[str, Any], cords: list[dict[str, Any]], tao_usd: float | None, in_list: bool
) -> dict[str, Any]:
    selector = NodeSelector(**orjson.loads(row["node_selector"]))
    supported = selector.supported_gpus
    instances = orjson.loads(row["instances"])
    factors = multiplier_factors(row, selector)
    factors.update(live_factors(row["manual_boost"], row["bounty_age"]))
    product = 1.0
    for factor in factors.values():
        product *= factor
    age = row["bounty_age"]
    return without_none(
        {
            "chute_id": row["chute_id"],
            "name": row["name"],
            "tagline": row["tagline"],
            "readme": row["readme"],
            "public": row["public"],
            "version": row["version"],
            "tool_description": row["tool_description"] or "",
            "slug": row["slug"],
            "standard_template": row["standard_template"] or "",
            "cords": [] if in_list else [cord_dict(c) for c in cords],
            "jobs": [job_dict(j) for j in orjson.loads(row["jobs"] or "[]") or []],
            "cord_ref_id": cord_ref_id(cords, row["name"], row["standard_template"]) if in_list else "",
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "image": without_none(
                {
                    "image_id": row["i_image_id"],
                    "user_id": row["i_user_id"],
                    "name": row["i_name"],
                    "tag": row["i_tag"],
                    "readme": row["i_readme"],
                    "public": row["i_public"],
                    "status": row["i_status"],
                    "created_at": row["i_created_at"],
                    "build_started_at": row["i_build_started_at"],
                    "build_completed_at": row["i_build_completed_at"],
                    "user": user_dict(row["i_username"], row["i_user_id"]),
                    "logo_id": row["i_logo_id"] or "",
                    "patch_version": row["i_patch_version"],
                    "chutes_version": row["i_chutes_version"] or "",
                    "logo": logo_url(row["i_logo_id"]),
                }
            ),
            "user": user_dict(row["username"], row["user_id"]),
            "supported_gpus": supported,
            "node_selector": without_none(
                {
                    **selector.stored(),
                    "include": selector.include or [],
                    "exclude": selector.exclude or [],
                    "compute_multiplier": selector.compute_multiplier,
                    "supported_gpus": supported,
                }
            ),
            "invocation_count": row["invocation_count"],
            "current_estimated_price": estimated_price(row, selector, tao_usd),
            "instances": [
                without_none(
                    {
                        "instance_id": i["instance_id"],
                        "region": i["region"],
                        "active": i["active"],
                        "verified": i["verified"],
                        "last_verified_at": datetime.fromisoformat(i["last_verified_at"])
                        if i["last_verified_at"]
                        else None,
                    }
                )
                for i in instances
            ],
            "logo_id": row["logo_id"] or "",
            "openrouter": row["openrouter"],
            "chutes_version": row["chutes_version"] or "",
            "revision": row["revision"] or "",
            "concurrency": row["concurrency"],
            "boost": row["boost"],
            "max_instances": row["max_instances"],
            "shutdown_after_seconds": row["shutdown_after_seconds"],
            "scaling_threshold": row["scaling_threshold"],
            "preemptible": row["public"] or legacy_billing(row),
            "allow_external_egress": row["allow_external_egress"],
            "tee": row["tee"],
            "effective_compute_multiplier": product,
            "compute_multiplier_factors": factors,
            "logo": logo_url(row["logo_id"]),
            "hot": any(i["active"] and i["verified"] for i in instances),
            "immutable": row["immutable"],
            "disabled": row["disabled"],
            "lock_modules": row["lock_modules"],
            "encrypted_fs": row["encrypted_fs"],
            "bounty": None if age is None else bounties.amount(age),
        }
    )


async def _no_reset(connection: asyncpg.Connection) -> None:
    # The peer never leaves session state behind (no LISTEN, SET, advisory locks or open cursors),
    # so it skips asyncpg's reset query: one round trip less per request than the default pool.
    return None


def create_app(database_url: str, tao_usd: float | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The registry's pool size (services.kit.db: 10 + 10 overflow); text for json, as the
        # suite's raw connections get it.
        app.state.pool = await asyncpg.create_pool(
            database_url, min_size=10, max_size=20, reset=_no_reset,
            server_settings={"search_path": "registry"},
        )  # fmt: skip
        yield
        await app.state.pool.close()

    app = FastAPI(title="chutes read-path lean peer", lifespan=lifespan)

    @app.get("/chutes/")
    async def list_chutes(
        request: Request,
        page: int = Query(0, ge=0, le=100),
        limit: int = Query(25, ge=1, le=5000),
        include_schemas: bool = False,
    ) -> Response:
        pool = request.app.state.pool
        async with pool.acquire() as connection:
            total = await connection.fetchval(COUNT_SQL)
            rows = await connection.fetch(PAGE_SQL, limit, page * limit)
        items, cord_refs = [], {}
        for row in rows:
            cords = orjson.loads(row["cords"]) or []
            item = chute_dict(row, cords, tao_usd, in_list=True)
            items.append(item)
            if item["cord_ref_id"] not in cord_refs:
                if not include_schemas:
                    cords = [{k: v for k, v in cord.items() if k not in SCHEMA_KEYS} for cord in cords]
                cord_refs[item["cord_ref_id"]] = cords
        body = {"total": total, "page": page, "limit": limit, "items": items, "cord_refs": cord_refs}
        return Response(orjson.dumps(body, option=ORJSON), media_type="application/json")

    @app.get("/chutes/{chute_id_or_name:path}")
    async def get_chute(chute_id_or_name: str, request: Request) -> Response:
        row = await request.app.state.pool.fetchrow(GET_SQL, chute_id_or_name)
        if row is None:
            return Response(NOT_FOUND, status_code=404, media_type="application/json")
        body = chute_dict(row, orjson.loads(row["cords"]) or [], tao_usd, in_list=False)
        return Response(orjson.dumps(body, option=ORJSON), media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=os.environ.get(DATABASE_URL_ENV), help=f"or ${DATABASE_URL_ENV}"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--tao-usd", type=float, help="TAO/USD rate for prices (the suite's CHUTES_TAO_USD_RATE)"
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error(f"give --database-url or set {DATABASE_URL_ENV}")
    uvicorn.run(
        create_app(args.database_url, args.tao_usd),
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
