"""Chutes as the API shows them: ChuteResponse messages (spec 4.17), prices, multipliers, refs.

Rows come from one SQL query per request (chute columns, the image's columns prefixed `i_`, the
instances as JSON), so the hot read paths never touch the ORM.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2

from chutes.chute import NodeSelector
from chutes.registry.v1 import registry_pb2
from services.kit.auth import Caller
from services.kit.messages import timestamp
from services.registry.images import image_message, logo_url
from services.registry.subnets import subnet_of

#: The platform's own account: its chutes are never billed as private ones.
SYSTEM_USERNAME = "chutes"
#: Private chutes created before this moment keep the legacy (preemptible) billing.
LEGACY_BILLING_BEFORE = datetime(2025, 9, 10, 16, 0, tzinfo=UTC)
#: Multiplier factors of spec 8.3.
PRIVATE_FACTOR, INTEGRATED_SUBNET_FACTOR, TEE_FACTOR = 2.0, 3.0, 2.25
#: Cord keys dropped from `cord_refs` unless the list asks for schemas.
SCHEMA_KEYS = ("input_schema", "minimal_input_schema", "output_schema")

#: Columns of the image joined to a chute, prefixed `i_` (for SQL that selects chute + image).
IMAGE_COLUMNS = (
    "image_id", "user_id", "username", "name", "tag", "readme", "logo_id", "public", "status",
    "chutes_version", "patch_version", "build_started_at", "build_completed_at", "created_at",
)  # fmt: skip
IMAGE_SELECT = ", ".join(f"i.{c} AS i_{c}" for c in IMAGE_COLUMNS)
#: Every chute column a response shows: all but `code`, which can be 150 kB and is served alone.
CHUTE_SELECT = ", ".join(
    f"c.{c}"
    for c in (
        "chute_id", "user_id", "username", "name", "tagline", "readme", "tool_description", "image_id",
        "logo_id", "public", "standard_template", "cords", "jobs", "node_selector", "slug", "version",
        "concurrency", "boost", "chutes_version", "revision", "openrouter", "discount", "max_instances",
        "scaling_threshold", "shutdown_after_seconds", "allow_external_egress", "encrypted_fs", "tee",
        "lock_modules", "immutable", "disabled", "invocation_count", "created_at", "updated_at",
    )
)  # fmt: skip
INSTANCES_SELECT = """COALESCE((SELECT json_agg(json_build_object(
    'instance_id', n.instance_id, 'region', n.region, 'active', n.active, 'verified', n.verified,
    'last_verified_at', n.last_verified_at) ORDER BY n.instance_id)
  FROM instances n WHERE n.chute_id = c.chute_id), '[]')::text AS instances"""


class ResponseCache:
    """Built responses, least recently used out first.

    A chute's response changes only when its row is updated (which moves `updated_at`) or its
    instances change, so `(kind, chute_id, updated_at, instances JSON)` identifies one exactly;
    readers look that key up with a light query and build (and fetch the full row) only on a miss.
    """

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> Any:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)


def cache_key(kind: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (kind, row["chute_id"], row["updated_at"], row["instances"])


def loads(value: Any) -> Any:
    """JSON values arrive as text (plain asyncpg, and `instances`, cast to text so it can be part
    of a cache key) or already decoded (SQLAlchemy's asyncpg dialect registers JSON codecs)."""
    return json.loads(value) if isinstance(value, str) else value


def is_affine(name: str) -> bool:
    return "affine" in name.lower()


def can_read(
    row: Mapping[str, Any], caller: Caller | None, shared: bool, subnet_substrings: list[str]
) -> bool:
    """Spec 2.6: public, owner, shared, affine by name, or a subnet role covering it."""
    return bool(
        row["public"]
        or (caller is not None and row["user_id"] == caller.user_id)
        or shared
        or is_affine(row["name"])
        or any(s in row["name"].lower() for s in subnet_substrings)
    )


def cord_ref_id(cords: list[dict[str, Any]], name: str, template: str | None) -> str:
    """uuid5 of the cords' JSON, so chutes with the same cords share one entry in `cord_refs`; for
    vLLM chutes the model name in the schemas' defaults is blanked so identical ones match."""
    text = json.dumps(cords, separators=(",", ":"))
    if template == "vllm":
        text = text.replace(f'"default":{json.dumps(name)}', '"default":""')
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


def _struct(value: Any) -> struct_pb2.Struct | None:
    if not isinstance(value, dict):
        return None
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def cord_message(cord: Mapping[str, Any]) -> registry_pb2.Cord:
    return registry_pb2.Cord(
        method=cord.get("method") or "",
        path=cord.get("path") or "",
        function=cord.get("function") or "",
        stream=bool(cord.get("stream")),
        passthrough=bool(cord.get("passthrough")),
        public_api_path=cord.get("public_api_path") or "",
        public_api_method=cord.get("public_api_method") or "",
        input_schema=_struct(cord.get("input_schema")),
        output_schema=_struct(cord.get("output_schema")),
        minimal_input_schema=_struct(cord.get("minimal_input_schema")),
        output_content_type=cord.get("output_content_type") or "",
    )


def job_message(job: Mapping[str, Any]) -> registry_pb2.JobDefinition:
    return registry_pb2.JobDefinition(
        name=job.get("name") or "",
        upload=bool(job.get("upload")),
        timeout=job.get("timeout"),
        disk_gb=job.get("disk_gb"),
        ports=[
            registry_pb2.Port(
                name=p.get("name") or "",
                port=p.get("port") or 0,
                proto=p.get("proto") or "",
                default=p.get("default"),
            )
            for p in job.get("ports") or []
        ],
    )


def legacy_billing(row: Mapping[str, Any]) -> bool:
    """Private, non-affine chutes from before the billing change keep preemptible billing."""
    return not row["public"] and row["created_at"] < LEGACY_BILLING_BEFORE and not is_affine(row["name"])


def multiplier_factors(row: Mapping[str, Any], selector: NodeSelector) -> dict[str, float]:
    """Spec 8.3 (manual boosts and bounties are not part of this suite yet)."""
    factors = {"base": selector.compute_multiplier}
    if not row["public"] and not legacy_billing(row) and row["username"] != SYSTEM_USERNAME:
        if subnet_of(row["name"]) is not None:
            factors["integrated_subnet"] = INTEGRATED_SUBNET_FACTOR
        else:
            factors["private"] = PRIVATE_FACTOR
    boost = row["boost"]
    if boost is not None and 0 < boost <= 20:
        factors["urgency_boost"] = boost
    if row["tee"]:
        factors["tee"] = TEE_FACTOR
    return factors


def estimated_price(row: Mapping[str, Any], selector: NodeSelector, tao_usd: float | None) -> dict[str, Any]:
    """`current_estimated_price` (spec 4.17): the node selector's hourly cost, per-token prices for
    vLLM, per-step for diffusion, and the hourly range of a private chute."""
    discount = row["discount"] or 0.0
    hourly = selector.hourly_price_usd * (1 - discount)

    def money(usd: float) -> dict[str, float]:
        return {"usd": usd, "tao": usd / tao_usd} if tao_usd else {"usd": usd}

    price: dict[str, Any] = {"usd": {"hour": hourly, "second": hourly / 3600}}
    if tao_usd:
        price["tao"] = {"hour": hourly / tao_usd, "second": hourly / 3600 / tao_usd}
    template = row["standard_template"]
    if template == "vllm":
        concurrency = row["concurrency"] or 16
        scale = 16 / concurrency if concurrency < 16 else 1.0
        per_in = round(max(hourly * 0.01358695 * scale, 0.01), 2)
        per_out = round(max(hourly * 0.05434782 * scale, 0.01), 2)
        price["per_million_tokens"] = {
            "input": money(per_in),
            "output": money(per_out),
            "input_cache_read": money(round(per_in * 0.5, 2)),
        }  # fmt: skip
    elif template == "diffusion":
        price["per_step"] = money(selector.hourly_price_usd * 0.005 * (1 - discount))
    if not row["public"]:
        low, high = selector.price_range_usd
        price["hourly_price_range"] = {"usd": {"min": low, "max": high}}
    return price


def chute_message(
    row: Mapping[str, Any],
    *,
    priced: bool,
    tao_usd: float | None = None,
    in_list: bool = False,
) -> registry_pb2.Chute:
    """The ChuteResponse of a row. `priced`: GET and list inject price and multiplier (deploy
    and update do not, as in the real API). `in_list`: cords are replaced by `cord_ref_id`."""
    selector = NodeSelector(**loads(row["node_selector"]))
    cords = loads(row["cords"]) or []
    instances = loads(row["instances"]) if "instances" in row else []
    chute = registry_pb2.Chute(
        chute_id=row["chute_id"],
        name=row["name"],
        tagline=row["tagline"],
        readme=row["readme"],
        public=row["public"],
        version=row["version"],
        tool_description=row["tool_description"] or "",
        slug=row["slug"],
        standard_template=row["standard_template"] or "",
        jobs=[job_message(j) for j in loads(row["jobs"]) or []],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
        image=image_message(row, prefix="i_"),
        user=registry_pb2.User(username=row["username"], user_id=row["user_id"]),
        supported_gpus=selector.supported_gpus,
        node_selector=registry_pb2.NodeSelector(
            **selector.stored(),
            compute_multiplier=selector.compute_multiplier,
            supported_gpus=selector.supported_gpus,
        ),
        invocation_count=row["invocation_count"],
        instances=[
            registry_pb2.Instance(
                instance_id=i["instance_id"],
                region=i["region"],
                active=i["active"],
                verified=i["verified"],
                last_verified_at=timestamp(datetime.fromisoformat(i["last_verified_at"]))
                if i["last_verified_at"]
                else None,
            )
            for i in instances
        ],
        logo_id=row["logo_id"] or "",
        openrouter=row["openrouter"],
        chutes_version=row["chutes_version"] or "",
        revision=row["revision"] or "",
        concurrency=row["concurrency"],
        boost=row["boost"],
        max_instances=row["max_instances"],
        shutdown_after_seconds=row["shutdown_after_seconds"],
        scaling_threshold=row["scaling_threshold"],
        preemptible=row["public"] or legacy_billing(row),
        allow_external_egress=row["allow_external_egress"],
        tee=row["tee"],
        logo=logo_url(row["logo_id"]),
        hot=any(i["active"] and i["verified"] for i in instances),
        immutable=row["immutable"],
        disabled=row["disabled"],
        lock_modules=row["lock_modules"],
        encrypted_fs=row["encrypted_fs"],
    )
    if in_list:
        chute.cord_ref_id = cord_ref_id(cords, row["name"], row["standard_template"])
    else:
        chute.cords.extend(cord_message(c) for c in cords)
    if priced:
        factors = multiplier_factors(row, selector)
        product = 1.0
        for factor in factors.values():
            product *= factor
        chute.effective_compute_multiplier = product
        chute.compute_multiplier_factors.update(factors)
        chute.current_estimated_price.update(estimated_price(row, selector, tao_usd))
    return chute
