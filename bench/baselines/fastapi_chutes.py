"""Baseline for the registry's read paths: FastAPI + SQLAlchemy ORM + asyncpg, the real API's stack.

`GET /chutes/{chute_id_or_name}` and `GET /chutes/` as an idiomatic FastAPI application would serve
them from the suite's own database (schema `registry`): per request, an `AsyncSession` from a
dependency loads `Chute` ORM objects with their image and instances (`selectinload`), checks what
an anonymous caller may see (public, or "affine" in the name), computes the derived fields (supported
GPUs, multipliers, price) and returns a dict that FastAPI validates against a pydantic response
model and serializes. The JSON has the keys and values the gateway returns for the same chute, so
`bench/run.py` compares like with like. No auth: the benchmark reads anonymously.

Not hand-optimized and not deliberately slow either: no caches, no raw SQL, default FastAPI
serialization; the engine's pool is the one the suite's registry uses (10 + 10 overflow, pre-ping).

    .venv/bin/pip install fastapi uvicorn httptools
    .venv/bin/python bench/baselines/fastapi_chutes.py --database-url postgresql://... --port 8000

The URL may also come from BASELINE_DATABASE_URL. One uvicorn worker process, uvloop, httptools.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from chutes.chute import NodeSelector

DATABASE_URL_ENV = "BASELINE_DATABASE_URL"
LOGO_CDN = "https://logos.chutes.ai/logos"
SYSTEM_USERNAME = "chutes"
LEGACY_BILLING_BEFORE = datetime(2025, 9, 10, 16, 0, tzinfo=UTC)
#: Name substrings of the integrated subnets (their private chutes bill at 3x, not 2x).
SUBNET_SUBSTRINGS = ("affine", "babelbit", "chronoseek", "glyph", "leoma", "turbovision", "vocence")
SCHEMA_KEYS = ("input_schema", "minimal_input_schema", "output_schema")
NOT_FOUND = "Chute not found, or does not belong to you"


# ---- ORM models ---------------------------------------------------------------------------------


class Base(DeclarativeBase):
    metadata = sa.MetaData(schema="registry")


class Image(Base):
    __tablename__ = "images"

    image_id: Mapped[str] = mapped_column(primary_key=True)
    user_id: Mapped[str]
    username: Mapped[str]
    name: Mapped[str]
    tag: Mapped[str]
    readme: Mapped[str]
    logo_id: Mapped[str | None]
    public: Mapped[bool]
    status: Mapped[str]
    chutes_version: Mapped[str | None]
    patch_version: Mapped[str]
    build_started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    build_completed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class Instance(Base):
    __tablename__ = "instances"

    instance_id: Mapped[str] = mapped_column(primary_key=True)
    chute_id: Mapped[str] = mapped_column(sa.ForeignKey("chutes.chute_id"))
    version: Mapped[str | None]
    miner_hotkey: Mapped[str | None]
    region: Mapped[str]
    active: Mapped[bool]
    verified: Mapped[bool]
    last_verified_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class ChuteShare(Base):
    __tablename__ = "chute_shares"

    chute_id: Mapped[str] = mapped_column(sa.ForeignKey("chutes.chute_id"), primary_key=True)
    shared_by: Mapped[str] = mapped_column(primary_key=True)
    shared_to: Mapped[str] = mapped_column(primary_key=True)
    shared_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class Chute(Base):
    __tablename__ = "chutes"

    chute_id: Mapped[str] = mapped_column(primary_key=True)
    user_id: Mapped[str]
    username: Mapped[str]
    name: Mapped[str]
    tagline: Mapped[str]
    readme: Mapped[str]
    tool_description: Mapped[str | None]
    image_id: Mapped[str] = mapped_column(sa.ForeignKey("images.image_id"))
    logo_id: Mapped[str | None]
    public: Mapped[bool]
    standard_template: Mapped[str | None]
    cords: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    jobs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    node_selector: Mapped[dict[str, Any]] = mapped_column(JSONB)
    slug: Mapped[str]
    code: Mapped[str]
    filename: Mapped[str]
    ref_str: Mapped[str]
    version: Mapped[str]
    concurrency: Mapped[int | None]
    boost: Mapped[float | None]
    chutes_version: Mapped[str | None]
    revision: Mapped[str | None]
    openrouter: Mapped[bool]
    discount: Mapped[float]
    max_instances: Mapped[int | None]
    scaling_threshold: Mapped[float | None]
    shutdown_after_seconds: Mapped[int | None]
    allow_external_egress: Mapped[bool]
    encrypted_fs: Mapped[bool]
    tee: Mapped[bool]
    lock_modules: Mapped[bool | None]
    immutable: Mapped[bool]
    disabled: Mapped[bool]
    invocation_count: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))

    image: Mapped[Image] = relationship()
    instances: Mapped[list[Instance]] = relationship(order_by=Instance.instance_id)
    shares: Mapped[list[ChuteShare]] = relationship()


# ---- response models (the JSON the gateway prints for registry.v1.Chute) ---------------------------


class UserResponse(BaseModel):
    username: str
    user_id: str
    logo_id: str = ""
    logo: str = ""


class ImageResponse(BaseModel):
    image_id: str
    user_id: str
    name: str
    tag: str
    readme: str
    public: bool
    status: str
    created_at: datetime
    build_started_at: datetime | None
    build_completed_at: datetime | None
    user: UserResponse
    logo_id: str
    patch_version: str
    chutes_version: str
    logo: str


class CordResponse(BaseModel):
    method: str = ""
    path: str = ""
    function: str = ""
    stream: bool = False
    passthrough: bool = False
    public_api_path: str = ""
    public_api_method: str = ""
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    minimal_input_schema: dict[str, Any] | None = None
    output_content_type: str = ""


class PortResponse(BaseModel):
    name: str = ""
    port: int = 0
    proto: str = ""
    default: bool | None = None


class JobResponse(BaseModel):
    name: str = ""
    upload: bool = False
    timeout: int | None = None
    disk_gb: int | None = None
    ports: list[PortResponse] = []


class NodeSelectorResponse(BaseModel):
    gpu_count: int
    min_vram_gb_per_gpu: int
    max_hourly_price_per_gpu: float | None
    include: list[str]
    exclude: list[str]
    dynamic: bool
    compute_multiplier: float
    supported_gpus: list[str]


class InstanceResponse(BaseModel):
    instance_id: str
    region: str
    active: bool
    verified: bool
    last_verified_at: datetime | None


class ChuteResponse(BaseModel):
    chute_id: str
    name: str
    tagline: str
    readme: str
    public: bool
    version: str
    tool_description: str
    slug: str
    standard_template: str
    cords: list[CordResponse]
    jobs: list[JobResponse]
    cord_ref_id: str
    created_at: datetime
    updated_at: datetime
    image: ImageResponse
    user: UserResponse
    supported_gpus: list[str]
    node_selector: NodeSelectorResponse
    invocation_count: int
    current_estimated_price: dict[str, Any]
    instances: list[InstanceResponse]
    logo_id: str
    openrouter: bool
    chutes_version: str
    revision: str
    concurrency: int | None
    boost: float | None
    max_instances: int | None
    shutdown_after_seconds: int | None
    scaling_threshold: float | None
    preemptible: bool
    allow_external_egress: bool
    tee: bool
    effective_compute_multiplier: float
    compute_multiplier_factors: dict[str, float]
    logo: str
    hot: bool
    immutable: bool
    disabled: bool
    lock_modules: bool | None
    encrypted_fs: bool


class ChuteListResponse(BaseModel):
    total: int
    page: int
    limit: int
    items: list[ChuteResponse]
    cord_refs: dict[str, list[dict[str, Any]]]


# ---- ORM object -> response dict ----------------------------------------------------------------


def logo_url(logo_id: str | None) -> str:
    return f"{LOGO_CDN}/{logo_id}.webp" if logo_id else ""


def is_affine(name: str) -> bool:
    return "affine" in name.lower()


def legacy_billing(chute: Chute) -> bool:
    return not chute.public and chute.created_at < LEGACY_BILLING_BEFORE and not is_affine(chute.name)


def multiplier_factors(chute: Chute, selector: NodeSelector) -> dict[str, float]:
    factors = {"base": selector.compute_multiplier}
    if not chute.public and not legacy_billing(chute) and chute.username != SYSTEM_USERNAME:
        subnet = any(s in chute.name.lower() for s in SUBNET_SUBSTRINGS)
        factors["integrated_subnet" if subnet else "private"] = 3.0 if subnet else 2.0
    if chute.boost is not None and 0 < chute.boost <= 20:
        factors["urgency_boost"] = chute.boost
    if chute.tee:
        factors["tee"] = 2.25
    return factors


def estimated_price(chute: Chute, selector: NodeSelector, tao_usd: float | None) -> dict[str, Any]:
    discount = chute.discount or 0.0
    hourly = selector.hourly_price_usd * (1 - discount)

    def money(usd: float) -> dict[str, float]:
        return {"usd": usd, "tao": usd / tao_usd} if tao_usd else {"usd": usd}

    price: dict[str, Any] = {"usd": {"hour": hourly, "second": hourly / 3600}}
    if tao_usd:
        price["tao"] = {"hour": hourly / tao_usd, "second": hourly / 3600 / tao_usd}
    if chute.standard_template == "vllm":
        concurrency = chute.concurrency or 16
        scale = 16 / concurrency if concurrency < 16 else 1.0
        per_in = round(max(hourly * 0.01358695 * scale, 0.01), 2)
        per_out = round(max(hourly * 0.05434782 * scale, 0.01), 2)
        price["per_million_tokens"] = {
            "input": money(per_in),
            "output": money(per_out),
            "input_cache_read": money(round(per_in * 0.5, 2)),
        }
    elif chute.standard_template == "diffusion":
        price["per_step"] = money(selector.hourly_price_usd * 0.005 * (1 - discount))
    if not chute.public:
        low, high = selector.price_range_usd
        price["hourly_price_range"] = {"usd": {"min": low, "max": high}}
    return price


def cord_ref_id(cords: list[dict[str, Any]], name: str, template: str | None) -> str:
    text = json.dumps(cords, separators=(",", ":"))
    if template == "vllm":
        text = text.replace(f'"default":{json.dumps(name)}', '"default":""')
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


def user_dict(username: str, user_id: str) -> dict[str, Any]:
    return {"username": username, "user_id": user_id}


def image_dict(image: Image) -> dict[str, Any]:
    return {
        "image_id": image.image_id,
        "user_id": image.user_id,
        "name": image.name,
        "tag": image.tag,
        "readme": image.readme,
        "public": image.public,
        "status": image.status,
        "created_at": image.created_at,
        "build_started_at": image.build_started_at,
        "build_completed_at": image.build_completed_at,
        "user": user_dict(image.username, image.user_id),
        "logo_id": image.logo_id or "",
        "patch_version": image.patch_version,
        "chutes_version": image.chutes_version or "",
        "logo": logo_url(image.logo_id),
    }


def chute_dict(chute: Chute, tao_usd: float | None, *, in_list: bool = False) -> dict[str, Any]:
    selector = NodeSelector(**chute.node_selector)
    supported = selector.supported_gpus
    factors = multiplier_factors(chute, selector)
    product = 1.0
    for factor in factors.values():
        product *= factor
    return {
        "chute_id": chute.chute_id,
        "name": chute.name,
        "tagline": chute.tagline,
        "readme": chute.readme,
        "public": chute.public,
        "version": chute.version,
        "tool_description": chute.tool_description or "",
        "slug": chute.slug,
        "standard_template": chute.standard_template or "",
        "cords": [] if in_list else chute.cords,
        "jobs": chute.jobs or [],
        "cord_ref_id": cord_ref_id(chute.cords, chute.name, chute.standard_template) if in_list else "",
        "created_at": chute.created_at,
        "updated_at": chute.updated_at,
        "image": image_dict(chute.image),
        "user": user_dict(chute.username, chute.user_id),
        "supported_gpus": supported,
        "node_selector": {
            **selector.stored(),
            "include": selector.include or [],
            "exclude": selector.exclude or [],
            "compute_multiplier": selector.compute_multiplier,
            "supported_gpus": supported,
        },
        "invocation_count": chute.invocation_count,
        "current_estimated_price": estimated_price(chute, selector, tao_usd),
        "instances": [
            {
                "instance_id": i.instance_id,
                "region": i.region,
                "active": i.active,
                "verified": i.verified,
                "last_verified_at": i.last_verified_at,
            }
            for i in chute.instances
        ],
        "logo_id": chute.logo_id or "",
        "openrouter": chute.openrouter,
        "chutes_version": chute.chutes_version or "",
        "revision": chute.revision or "",
        "concurrency": chute.concurrency,
        "boost": chute.boost,
        "max_instances": chute.max_instances,
        "shutdown_after_seconds": chute.shutdown_after_seconds,
        "scaling_threshold": chute.scaling_threshold,
        "preemptible": chute.public or legacy_billing(chute),
        "allow_external_egress": chute.allow_external_egress,
        "tee": chute.tee,
        "effective_compute_multiplier": product,
        "compute_multiplier_factors": factors,
        "logo": logo_url(chute.logo_id),
        "hot": any(i.active and i.verified for i in chute.instances),
        "immutable": chute.immutable,
        "disabled": chute.disabled,
        "lock_modules": chute.lock_modules,
        "encrypted_fs": chute.encrypted_fs,
    }


# ---- application --------------------------------------------------------------------------------


def visible_to(user_id: str | None) -> sa.ColumnElement[bool]:
    """Spec 2.6 for the read paths: public, affine by name, and for a signed-in caller also their
    own and those shared with them (the benchmark only reads anonymously)."""
    anyone = sa.or_(Chute.public.is_(True), sa.func.lower(Chute.name).like("%affine%"))
    if user_id is None:
        return anyone
    shared = sa.exists().where(ChuteShare.chute_id == Chute.chute_id, ChuteShare.shared_to == user_id)
    return sa.or_(anyone, Chute.user_id == user_id, shared)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One ORM session per request, from the application's engine."""
    async with request.app.state.sessions() as session:
        yield session


def get_tao_usd(request: Request) -> float | None:
    rate: float | None = request.app.state.tao_usd
    return rate


SessionDep = Annotated[AsyncSession, Depends(get_session)]
TaoUsdDep = Annotated[float | None, Depends(get_tao_usd)]
router = APIRouter()
WITH_RELATIONS = (selectinload(Chute.image), selectinload(Chute.instances))


@router.get("/chutes/", response_model=ChuteListResponse, response_model_exclude_none=True)
async def list_chutes(
    session: SessionDep,
    tao_usd: TaoUsdDep,
    page: Annotated[int, Query(ge=0, le=100)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 25,
    include_schemas: bool = False,
) -> dict[str, Any]:
    query = sa.select(Chute).join(Chute.image).where(visible_to(None))
    total = await session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    result = await session.scalars(
        query.options(*WITH_RELATIONS)
        .order_by(Chute.invocation_count.desc(), Chute.chute_id)
        .offset(page * limit)
        .limit(limit)
    )
    items, cord_refs = [], {}
    for chute in result:
        item = chute_dict(chute, tao_usd, in_list=True)
        items.append(item)
        if item["cord_ref_id"] not in cord_refs:
            cords = chute.cords or []
            if not include_schemas:
                cords = [{k: v for k, v in cord.items() if k not in SCHEMA_KEYS} for cord in cords]
            cord_refs[item["cord_ref_id"]] = cords
    return {"total": total, "page": page, "limit": limit, "items": items, "cord_refs": cord_refs}


@router.get("/chutes/{chute_id_or_name:path}", response_model=ChuteResponse, response_model_exclude_none=True)
async def get_chute(chute_id_or_name: str, session: SessionDep, tao_usd: TaoUsdDep) -> dict[str, Any]:
    chute = await session.scalar(
        sa.select(Chute)
        .where(sa.or_(Chute.chute_id == chute_id_or_name, Chute.name == chute_id_or_name))
        .where(visible_to(None))
        .options(*WITH_RELATIONS)
        .order_by((Chute.username == SYSTEM_USERNAME).desc(), Chute.created_at)
        .limit(1)
    )
    if chute is None:
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    return chute_dict(chute, tao_usd)


def create_app(database_url: str, tao_usd: float | None = None) -> FastAPI:
    if database_url.startswith(("postgresql://", "postgres://")):
        database_url = "postgresql+asyncpg://" + database_url.split("://", 1)[1]
    # The pool the suite's registry uses (services.kit.db.Database): 10 connections + 10 overflow.
    engine = create_async_engine(database_url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    app = FastAPI(title="chutes read-path baseline")
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    app.state.tao_usd = tao_usd
    app.include_router(router)
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
