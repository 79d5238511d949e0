"""Deploying a chute (`POST /chutes/?accept_fee=`), as the real API's route does it.

`deploy()` reads as the real pipeline: request validation (request.py, FastAPI's 422 list), then
the numbered rules of rules.py in the real order, then one transaction that creates the chute or
redeploys it (recording a rolling update when it has instances) and writes its event.

One deliberate order: the node selector rules (12, and 14 which settles the stored selector) run
before the fee (13), because the fee is priced on the selector rule 14 settles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import AsyncConnection

from chutes.registry.v1 import registry_pb2
from services.kit.caller import Caller
from services.registry import image_store, store
from services.registry.deploy import rules
from services.registry.deploy.request import validate
from services.registry.pricing import SYSTEM_USERNAME
from services.registry.subnets import subnet_of


async def deploy(
    connection: AsyncConnection, caller: Caller, args: registry_pb2.ChuteArgs, accept_fee: bool
) -> str:
    """Validate and apply a deploy inside the caller's transaction; returns the chute's id and
    raises the real API's errors."""
    selector = validate(args)
    subnet = subnet_of(args.name)
    tee = args.tee if args.HasField("tee") else False
    rules.rule_1_subnet_membership(caller, subnet)
    rules.rule_3_tee_allowed(caller, tee)
    if rules.rule_4_daily_limit_applies(caller):
        rules.rule_4_daily_limit(await store.deployments_today(connection, caller.user_id))
    rules.rule_6_tee_names(args.name, tee)
    rules.rule_7_public_needs_role(caller, args.public)
    image = rules.rule_8_image(await image_store.find_image(connection, args.image, caller), args.public)
    version = rules.rule_9_version(image, args.code)
    existing = await store.lock_own_chute_named(connection, caller.user_id, args.name)
    rules.rule_10_not_identical(existing, args.name, version, args.public)
    template = args.standard_template if args.HasField("standard_template") else None
    rules.rule_12_node_selector_limits(selector)
    selector = rules.rule_14_reserved_gpus(selector, caller)
    rules.rule_13_fee(caller, selector, new_chute=existing is None, accept_fee=accept_fee)
    rules.rule_15_vllm_revision(template, args)
    rules.rule_17_sdk_version(caller, image)
    rules.rule_20_cords_or_jobs(args)
    values = _settled_values(caller, args, image, version, template, selector.stored(), tee)
    rules.rule_19_code_parses(args.code)
    if existing is not None:
        return await _redeploy(connection, existing, values, rolls=subnet is None)
    return await _create(connection, caller, args.name, values)


def _settled_values(
    caller: Caller,
    args: registry_pb2.ChuteArgs,
    image: Mapping[Any, Any],
    version: str,
    template: str | None,
    node_selector: dict[str, Any],
    tee: bool,
) -> dict[str, Any]:
    """The columns a deploy writes, with the defaults the real API settles (rule 11, and the
    scaling knobs of 18/19: platform-scaled, so absent, for public and platform chutes)."""
    scaled = not args.public and caller.username != SYSTEM_USERNAME

    def knob(name: str, default: float) -> Any:
        if not scaled:
            return None
        return getattr(args, name) if args.HasField(name) else default  # type: ignore[arg-type]

    def optional(name: str, default: Any = None) -> Any:
        return getattr(args, name) if args.HasField(name) else default  # type: ignore[arg-type]

    return {
        "image_id": image["image_id"],
        "tagline": args.tagline,
        "readme": args.readme,
        "tool_description": optional("tool_description"),
        "logo_id": args.logo_id or None,
        "public": args.public,
        "standard_template": template,
        "code": args.code,
        "filename": args.filename,
        "ref_str": args.ref_str,
        "version": version,
        "chutes_version": image["chutes_version"],
        "cords": _json_list(args.cords),
        "jobs": _json_list(args.jobs),
        "node_selector": node_selector,
        "concurrency": optional("concurrency"),
        "revision": optional("revision"),
        "max_instances": knob("max_instances", 1),
        "scaling_threshold": knob("scaling_threshold", 0.75),
        "shutdown_after_seconds": knob("shutdown_after_seconds", 300),
        "allow_external_egress": rules.rule_11_egress(args),
        "tee": tee,
        "lock_modules": True if template else optional("lock_modules", False),
        "encrypted_fs": optional("encrypted_fs", False),
        "updated_at": sa.func.now(),
    }


def _json_list(messages: Any) -> list[dict[str, Any]]:
    return [
        json_format.MessageToDict(
            m, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for m in messages
    ]


async def _create(connection: AsyncConnection, caller: Caller, name: str, values: dict[str, Any]) -> str:
    """Rule 19: a new chute, with the real API's id and slug."""
    rules.rule_19_name(name)
    chute_id = rules.rule_19_chute_id(caller.username, name)
    slug = await store.unique_slug(connection, rules.rule_19_slug_base(caller.username, name))
    await store.insert_chute(
        connection,
        {
            "chute_id": chute_id,
            "user_id": caller.user_id,
            "username": caller.username,
            "name": name,
            "slug": slug,
        }
        | values,
    )
    await store.emit(
        connection,
        "chute_created",
        {"chute_id": chute_id, "version": values["version"], "job_only": not values["cords"]},
    )
    return chute_id


async def _redeploy(
    connection: AsyncConnection, existing: Mapping[Any, Any], values: dict[str, Any], *, rolls: bool
) -> str:
    """Rule 18: a new version of an existing chute; id, slug, name and creation time stay. A chute
    with instances rolls over to it (not subnet chutes, as in the real API)."""
    chute_id: str = existing["chute_id"]
    rules.rule_18_mutable(existing)
    running = await store.instances_per_miner(connection, chute_id)
    started = (existing["version"], values["version"], running) if running and rolls else None
    await store.replace_rolling_update(connection, chute_id, started)
    # Encryption can be turned off by a redeploy, never on.
    values = values | {"encrypted_fs": existing["encrypted_fs"] and values["encrypted_fs"]}
    await store.update_chute(connection, chute_id, values)
    await store.emit(
        connection,
        "chute_updated",
        {"chute_id": chute_id, "version": values["version"], "job_only": not values["cords"]},
    )
    return chute_id
