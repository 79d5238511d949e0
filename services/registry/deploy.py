"""Deploying a chute (`POST /chutes/?accept_fee=`): spec/chutes-api.md 4.9, in the real order.

Request validation first (FastAPI's 422 list), then every rule of the pipeline that needs no
outside system, each with the real status and a clear detail, then one transaction that creates
or redeploys the chute, records a rolling update when instances exist, and writes the event.
Left out, because they need systems this suite does not have: the LLM code review, the Hugging
Face checks of affine chutes and metagraph registrations (a subnet's chutes need the subnet's
admin role instead).
"""

from __future__ import annotations

import ast
import json
import re
import secrets
import string
import uuid
from collections.abc import Mapping
from typing import Any

import pydantic
import sqlalchemy as sa
from google.protobuf import json_format
from slugify import slugify
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from chutes.chute import NodeSelector
from chutes.gpu import CONSUMER_GPUS
from chutes.registry.v1 import registry_pb2
from services.kit.auth import Caller
from services.kit.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    PaymentRequired,
    PermissionDenied,
    TooManyRequests,
    ValidationFailed,
    out_of_range,
)
from services.kit.messages import has_field
from services.kit.roles import Role
from services.registry.chutes import SYSTEM_USERNAME
from services.registry.images import find_image
from services.registry.subnets import subnet_of
from services.registry.tables import chute_history, chutes, instances, outbox, rolling_updates

NAME_PATTERN = re.compile(r"^(?:([a-zA-Z0-9_.-]+)/)*([a-z0-9][a-z0-9_./-]*)$", re.IGNORECASE)
FILENAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*\.py$")
REF_PATTERN = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")
REVISION_PATTERN = re.compile(r"^[a-fA-F0-9]{40}$")
CORD_PATH_PATTERN = re.compile(r"^(/[a-z][a-z0-9_]*)+$", re.IGNORECASE)
PUBLIC_PATH_PATTERN = re.compile(r"^(/[a-z][a-z0-9_-]*)+$", re.IGNORECASE)
TEMPLATES = ("vllm", "diffusion", "tei", "embedding")
#: Oldest SDK whose images may be deployed.
MIN_CHUTES_VERSION = (0, 3, 61)
DAILY_DEPLOYMENTS = 24
MAX_EXCLUDED_GPUS = 5
MAX_PRICE_SPREAD = 2.5
#: The deployment fee is this many hours of the node selector's cheapest price.
FEE_HOURS = 3
#: GPUs that ordinary users must ask for explicitly.
RESERVED_GPUS = frozenset({"b200", "mi300x"})
_SLUG_SUFFIX = string.ascii_lowercase + string.digits
_UNLIMITED_USERNAMES = frozenset({SYSTEM_USERNAME, "rayonlabs"})


def _length(violations: list[FieldViolation], name: str, value: str, low: int, high: int) -> None:
    if len(value) < low:
        violations.append(
            FieldViolation(
                ("body", name), f"String should have at least {low} characters", "string_too_short"
            )
        )
    elif len(value) > high:
        violations.append(
            FieldViolation(("body", name), f"String should have at most {high} characters", "string_too_long")
        )


def _pattern(
    violations: list[FieldViolation], loc: tuple[str | int, ...], value: str, pattern: re.Pattern[str]
) -> None:
    if not pattern.match(value):
        violations.append(
            FieldViolation(loc, f"String should match pattern '{pattern.pattern}'", "string_pattern_mismatch")
        )


def node_selector_of(args: registry_pb2.ChuteArgs) -> NodeSelector:
    """The selector as sent (0 for the counts means not given: proto3 cannot tell them apart)."""
    ns = args.node_selector
    values: dict[str, Any] = {
        "include": list(ns.include) or None,
        "exclude": list(ns.exclude) or None,
        "dynamic": ns.dynamic,
    }
    if ns.gpu_count:
        values["gpu_count"] = ns.gpu_count
    if ns.min_vram_gb_per_gpu:
        values["min_vram_gb_per_gpu"] = ns.min_vram_gb_per_gpu
    if ns.HasField("max_hourly_price_per_gpu"):
        values["max_hourly_price_per_gpu"] = ns.max_hourly_price_per_gpu
    return NodeSelector(**values)


def validate(args: registry_pb2.ChuteArgs) -> NodeSelector:
    """The request validation FastAPI would do on ChuteArgs: all problems at once, as a 422."""
    problems: list[FieldViolation] = []
    for name in ("name", "image", "code", "filename", "ref_str"):
        if not getattr(args, name):
            problems.append(FieldViolation(("body", name), "Field required", "missing"))
    for name in ("public", "node_selector"):
        if not has_field(args, name):
            problems.append(FieldViolation(("body", name), "Field required", "missing"))
    if args.name:
        _length(problems, "name", args.name, 3, 128)
    for name, high in (("tagline", 1024), ("readme", 16384), ("tool_description", 16384), ("code", 150_000)):
        _length(problems, name, getattr(args, name), 0, high)
    if args.filename:
        _pattern(problems, ("body", "filename"), args.filename, FILENAME_PATTERN)
    if args.ref_str:
        _pattern(problems, ("body", "ref_str"), args.ref_str, REF_PATTERN)
    if args.HasField("standard_template") and args.standard_template not in TEMPLATES:
        problems.append(
            FieldViolation(
                ("body", "standard_template"),
                f"Input should be one of {', '.join(TEMPLATES)}",
                "literal_error",
            )
        )
    if args.HasField("concurrency") and args.concurrency > 256:
        problems.append(
            FieldViolation(
                ("body", "concurrency"), "Input should be less than or equal to 256", "less_than_equal"
            )
        )
    if args.HasField("revision"):
        _pattern(problems, ("body", "revision"), args.revision, REVISION_PATTERN)
    problems += out_of_range(
        *(
            (("body", name), getattr(args, name), low, high)
            for name, low, high in (
                ("max_instances", 1, 100),
                ("scaling_threshold", 0.0, 1.0),
                ("shutdown_after_seconds", 60, 604_800),
            )
            if has_field(args, name)
        )
    )
    for i, cord in enumerate(args.cords):
        loc: tuple[str | int, ...] = ("body", "cords", i)
        _pattern(problems, (*loc, "path"), cord.path, CORD_PATH_PATTERN)
        if not cord.function:
            problems.append(FieldViolation((*loc, "function"), "Field required", "missing"))
        if cord.public_api_path:
            _pattern(problems, (*loc, "public_api_path"), cord.public_api_path, PUBLIC_PATH_PATTERN)
            if cord.public_api_method not in ("GET", "POST"):
                problems.append(
                    FieldViolation(
                        (*loc, "public_api_method"), "Input should be 'GET' or 'POST'", "literal_error"
                    )
                )
    for i, job in enumerate(args.jobs):
        if not job.name:
            problems.append(FieldViolation(("body", "jobs", i, "name"), "Field required", "missing"))
        if job.HasField("disk_gb"):
            problems += out_of_range((("body", "jobs", i, "disk_gb"), job.disk_gb, 10, 1000))
        for j, port in enumerate(job.ports):
            if port.port != 2202 and not 8002 <= port.port <= 65535:
                problems.append(
                    FieldViolation(
                        ("body", "jobs", i, "ports", j, "port"),
                        "Port must be 2202 or within 8002..65535",
                        "value_error",
                    )
                )
    selector = None
    if args.HasField("node_selector"):
        try:
            selector = node_selector_of(args)
        except pydantic.ValidationError as invalid:
            for error in invalid.errors():
                problems.append(
                    FieldViolation(("body", "node_selector", *error["loc"]), error["msg"], error["type"])
                )
    if problems:
        raise ValidationFailed(problems)
    assert selector is not None
    return selector


def version_tuple(version: str | None) -> tuple[int, ...]:
    """`0.6.9` as (0, 6, 9); anything unparsable sorts first."""
    parts = []
    for piece in (version or "").split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def chute_version(image: Mapping[Any, Any], code: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{image['image_id']}:{image['patch_version']}:{code}"))


def chute_id_of(username: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{username}::chute::{name}"))


async def _unique_slug(connection: AsyncConnection, username: str, name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+$", "-", slugify(f"{username}-{name}", max_length=58).lower())
    slug = base
    while (await connection.execute(sa.select(chutes.c.chute_id).where(chutes.c.slug == slug))).first():
        slug = f"{base}-{''.join(secrets.choice(_SLUG_SUFFIX) for _ in range(5))}"
    return slug


async def _deployments_today(connection: AsyncConnection, user_id: str) -> int:
    since = sa.func.now() - sa.text("interval '24 hours'")
    count: int = (
        await connection.execute(
            sa.select(sa.func.count())
            .select_from(chute_history)
            .where(
                chute_history.c.user_id == user_id,
                sa.or_(
                    chute_history.c.created_at > since,
                    chute_history.c.updated_at > since,
                    chute_history.c.deleted_at > since,
                ),
            )
        )
    ).scalar_one()
    return count


def _check_node_selector(selector: NodeSelector, caller: Caller) -> NodeSelector:
    """Rules 12 and 14 of spec 4.9; returns the selector to store (reserved GPUs excluded)."""
    if len(selector.exclude or []) > MAX_EXCLUDED_GPUS:
        raise InvalidArgument(f"Cannot exclude more than {MAX_EXCLUDED_GPUS} GPU types")
    supported = set(selector.supported_gpus)
    if supported and supported <= CONSUMER_GPUS:
        raise PermissionDenied("You are not allowed to require consumer GPUs exclusively.")
    if selector.include and selector.price_spread > MAX_PRICE_SPREAD:
        raise InvalidArgument(
            f"The GPUs in include differ too much in price (max/min hourly rate above {MAX_PRICE_SPREAD}); "
            "narrow the include list"
        )
    if caller.has_role(Role.UNLIMITED_DEV) or caller.username == SYSTEM_USERNAME:
        return selector
    if not selector.exclude:
        selector = selector.model_copy(update={"exclude": sorted(RESERVED_GPUS)})
    supported = set(selector.supported_gpus)
    if not supported:
        raise InvalidArgument("No supported GPUs match your node_selector")
    if supported <= RESERVED_GPUS:
        raise PermissionDenied("Deploying exclusively on b200/mi300x requires approval")
    return selector


def _json_list(messages: Any) -> list[dict[str, Any]]:
    return [
        json_format.MessageToDict(
            m, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for m in messages
    ]


async def deploy(
    connection: AsyncConnection, caller: Caller, args: registry_pb2.ChuteArgs, accept_fee: bool
) -> str:
    """Validate and apply a deploy inside the caller's transaction; returns the chute's id and
    raises the real API's errors."""
    selector = validate(args)
    name = args.name
    unlimited = caller.has_role(Role.UNLIMITED_DEV)
    subnet = subnet_of(name)
    if (
        subnet
        and not unlimited
        and not (caller.has_role(Role.SUBNET_ADMIN) and subnet.netuid in caller.netuids)
    ):
        raise PermissionDenied(
            f"You must be a registered miner on subnet={subnet.name} netuid={subnet.netuid} "
            "to deploy this chute"
        )
    tee = args.tee if args.HasField("tee") else False
    if tee and not unlimited:
        raise InvalidArgument("TEE private deployments are limited to approved users")
    if not (unlimited or caller.username in _UNLIMITED_USERNAMES):
        if await _deployments_today(connection, caller.user_id) >= DAILY_DEPLOYMENTS:
            raise TooManyRequests(
                f"Only {DAILY_DEPLOYMENTS} updates/creations of chutes are allowed per 24 hours; "
                "try again later"
            )
    if ("TEE" in name or name.lower().endswith("tee")) and not tee:
        raise InvalidArgument(
            "Chute names containing TEE (or ending in tee) are reserved for tee=true chutes"
        )
    public = args.public
    if public and not caller.has_role(Role.PUBLIC_MODEL_DEPLOYMENT):
        raise InvalidArgument(
            "Chutes no longer supports public chutes from users; deploy privately and share it instead"
        )
    image = await find_image(connection, args.image, caller)
    if image is None:
        raise InvalidArgument("Chute image not found, or does not belong to you")
    if public and not image["public"]:
        raise AlreadyExists("A public chute needs a public image")
    version = chute_version(image, args.code)
    existing = (
        (
            await connection.execute(
                sa.select(chutes)
                .where(chutes.c.user_id == caller.user_id, sa.func.lower(chutes.c.name) == name.lower())
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if existing is not None and existing["version"] == version and existing["public"] == public:
        raise AlreadyExists(f"Chute with name={name}, version={version} and public={public} already exists")

    template = args.standard_template if args.HasField("standard_template") else None
    selector = _check_node_selector(selector, caller)
    fee = (
        0.0
        if existing is not None or caller.has_role(Role.FREE_ACCOUNT)
        else FEE_HOURS * selector.hourly_price_usd
    )
    if fee > 0 and not accept_fee:
        raise PaymentRequired(
            f"DEPLOYMENT FEE NOTICE: deploying this chute costs a one-time fee of ${fee:.2f} "
            f"({FEE_HOURS} hours of its cheapest node). Re-run with --accept-fee (accept_fee=true) to accept."
        )
    if not caller.has_role(Role.FREE_ACCOUNT) and caller.balance <= fee:
        raise PaymentRequired(
            f"Your balance (${caller.balance:.2f}) does not cover the deployment fee (${fee:.2f}); "
            "top up first"
        )
    if template == "vllm" and not args.HasField("revision"):
        raise InvalidArgument("vllm chutes must pin a revision (40-hex Hugging Face commit)")
    if caller.username != SYSTEM_USERNAME and version_tuple(image["chutes_version"]) < MIN_CHUTES_VERSION:
        raise InvalidArgument(
            f"The image's chutes SDK version ({image['chutes_version'] or 'unknown'}) is too old; "
            f"{'.'.join(map(str, MIN_CHUTES_VERSION))} or newer is required"
        )
    if not args.cords and not args.jobs:
        raise InvalidArgument("A chute must have at least one cord or one job")
    if args.cords and args.jobs:
        raise InvalidArgument("A chute can have jobs or cords not both.")

    # Values as the real API settles them (rule 11 and the scaling knobs of 18/19).
    scaled = not public and caller.username != SYSTEM_USERNAME
    egress = args.allow_external_egress if args.HasField("allow_external_egress") else False
    if "affine" in name.lower() or "turbovision" in name.lower():
        egress = False
    values: dict[str, Any] = {
        "image_id": image["image_id"],
        "tagline": args.tagline,
        "readme": args.readme,
        "tool_description": args.tool_description if args.HasField("tool_description") else None,
        "logo_id": args.logo_id or None,
        "public": public,
        "standard_template": template,
        "code": args.code,
        "filename": args.filename,
        "ref_str": args.ref_str,
        "version": version,
        "chutes_version": image["chutes_version"],
        "cords": _json_list(args.cords),
        "jobs": _json_list(args.jobs),
        "node_selector": selector.stored(),
        "concurrency": args.concurrency if args.HasField("concurrency") else None,
        "revision": args.revision if args.HasField("revision") else None,
        "max_instances": (args.max_instances if args.HasField("max_instances") else 1) if scaled else None,
        "scaling_threshold": (args.scaling_threshold if args.HasField("scaling_threshold") else 0.75)
        if scaled
        else None,
        "shutdown_after_seconds": (
            args.shutdown_after_seconds if args.HasField("shutdown_after_seconds") else 300
        )
        if scaled
        else None,
        "allow_external_egress": egress,
        "tee": tee,
        "lock_modules": True if template else (args.lock_modules if args.HasField("lock_modules") else False),
        "encrypted_fs": args.encrypted_fs if args.HasField("encrypted_fs") else False,
        "updated_at": sa.func.now(),
    }
    try:
        ast.parse(args.code)
    except SyntaxError as error:
        raise InvalidArgument(f"Validation failure: code does not parse as Python: {error}") from None

    if existing is not None:
        return await _redeploy(connection, existing, values, version, subnet is not None)
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(f"Validation failure: invalid chute name {name!r}")
    chute_id = chute_id_of(caller.username, name)
    slug = await _unique_slug(connection, caller.username, name)
    await connection.execute(
        chutes.insert().values(
            chute_id=chute_id,
            user_id=caller.user_id,
            username=caller.username,
            name=name,
            slug=slug,
            **values,
        )
    )
    await emit(
        connection, "chute_created", {"chute_id": chute_id, "version": version, "job_only": not args.cords}
    )
    return chute_id


async def _redeploy(
    connection: AsyncConnection,
    existing: RowMapping,
    values: dict[str, Any],
    version: str,
    subnet_model: bool,
) -> str:
    chute_id: str = existing["chute_id"]
    if existing["immutable"]:
        raise PermissionDenied("This chute is immutable and cannot be modified. Only deletion is allowed.")
    await connection.execute(rolling_updates.delete().where(rolling_updates.c.chute_id == chute_id))
    counts = (
        await connection.execute(
            sa.select(instances.c.miner_hotkey, sa.func.count())
            .where(instances.c.chute_id == chute_id)
            .group_by(instances.c.miner_hotkey)
        )
    ).all()
    if counts and not subnet_model:
        await connection.execute(
            rolling_updates.insert().values(
                chute_id=chute_id,
                old_version=existing["version"],
                new_version=version,
                permitted={hotkey or "": count for hotkey, count in counts},
            )
        )
    # Encryption can be turned off by a redeploy, never on.
    values = {**values, "encrypted_fs": existing["encrypted_fs"] and values["encrypted_fs"]}
    await connection.execute(chutes.update().where(chutes.c.chute_id == chute_id).values(**values))
    await emit(
        connection,
        "chute_updated",
        {"chute_id": chute_id, "version": version, "job_only": not values["cords"]},
    )
    return chute_id


async def emit(connection: AsyncConnection, kind: str, payload: Mapping[str, Any]) -> None:
    """An event into the outbox, in the caller's transaction (announced by NOTIFY on commit)."""
    await connection.execute(outbox.insert().values(kind=kind, payload=json.loads(json.dumps(payload))))
