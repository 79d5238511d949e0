"""The rules of the real API's deploy pipeline (POST /chutes/), one function each, numbered as the
real route applies them. Each takes plain values and raises the real status with a clear detail,
so each can be read, tested and changed alone (tests/test_deploy_rules.py).

Left out, because they need systems this suite does not run: 2 (affine code validator and
Hugging Face checks), 5 (the LLM code review) and 16 (affine image tags); a subnet's chutes need
the subnet's admin role instead of a metagraph registration (1).
"""

from __future__ import annotations

import ast
import re
import uuid
from collections.abc import Mapping
from typing import Any

from slugify import slugify

from chutes.chute import NodeSelector
from chutes.gpu import CONSUMER_GPUS
from chutes.registry.v1 import registry_pb2
from services.kit.caller import Caller
from services.kit.errors import (
    AlreadyExists,
    InvalidArgument,
    PaymentRequired,
    PermissionDenied,
    TooManyRequests,
)
from services.kit.roles import Role
from services.kit.versions import version_tuple
from services.registry.pricing import SYSTEM_USERNAME
from services.registry.subnets import Subnet

NAME_PATTERN = re.compile(r"^(?:([a-zA-Z0-9_.-]+)/)*([a-z0-9][a-z0-9_./-]*)$", re.IGNORECASE)
#: Oldest SDK whose images may be deployed.
MIN_CHUTES_VERSION = (0, 3, 61)
DAILY_DEPLOYMENTS = 24
MAX_EXCLUDED_GPUS = 5
MAX_PRICE_SPREAD = 2.5
#: The deployment fee is this many hours of the node selector's cheapest price.
FEE_HOURS = 3
#: GPUs that ordinary users must ask for explicitly.
RESERVED_GPUS = frozenset({"b200", "mi300x"})
#: Accounts without the daily deployment limit.
UNLIMITED_USERNAMES = frozenset({SYSTEM_USERNAME, "rayonlabs"})


def is_unlimited(caller: Caller) -> bool:
    return caller.has_role(Role.UNLIMITED_DEV)


def rule_1_subnet_membership(caller: Caller, subnet: Subnet | None) -> None:
    """A chute named for an integrated subnet needs that subnet's admin role (403)."""
    if subnet is None or is_unlimited(caller):
        return
    if not (caller.has_role(Role.SUBNET_ADMIN) and subnet.netuid in caller.netuids):
        raise PermissionDenied(
            f"You must be a registered miner on subnet={subnet.name} netuid={subnet.netuid} "
            "to deploy this chute"
        )


def rule_3_tee_allowed(caller: Caller, tee: bool) -> None:
    if tee and not is_unlimited(caller):
        raise InvalidArgument("TEE private deployments are limited to approved users")


def rule_4_daily_limit_applies(caller: Caller) -> bool:
    """Whether the caller's deployments are counted at all (rule 4's exemptions)."""
    return not (is_unlimited(caller) or caller.username in UNLIMITED_USERNAMES)


def rule_4_daily_limit(deployments_today: int) -> None:
    """At most DAILY_DEPLOYMENTS creations, updates and deletions a day (429)."""
    if deployments_today >= DAILY_DEPLOYMENTS:
        raise TooManyRequests(
            f"Only {DAILY_DEPLOYMENTS} updates/creations of chutes are allowed per 24 hours; try again later"
        )


def rule_6_tee_names(name: str, tee: bool) -> None:
    if ("TEE" in name or name.lower().endswith("tee")) and not tee:
        raise InvalidArgument(
            "Chute names containing TEE (or ending in tee) are reserved for tee=true chutes"
        )


def rule_7_public_needs_role(caller: Caller, public: bool) -> None:
    if public and not caller.has_role(Role.PUBLIC_MODEL_DEPLOYMENT):
        raise InvalidArgument(
            "Chutes no longer supports public chutes from users; deploy privately and share it instead"
        )


def rule_8_image(image: Mapping[Any, Any] | None, public: bool) -> Mapping[Any, Any]:
    """The image must be visible to the caller (400), and public for a public chute (409)."""
    if image is None:
        raise InvalidArgument("Chute image not found, or does not belong to you")
    if public and not image["public"]:
        raise AlreadyExists("A public chute needs a public image")
    return image


def rule_9_version(image: Mapping[Any, Any], code: str) -> str:
    """uuid5(NAMESPACE_OID, "{image_id}:{patch_version}:{code}")."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{image['image_id']}:{image['patch_version']}:{code}"))


def rule_10_not_identical(existing: Mapping[Any, Any] | None, name: str, version: str, public: bool) -> None:
    if existing is not None and existing["version"] == version and existing["public"] == public:
        raise AlreadyExists(f"Chute with name={name}, version={version} and public={public} already exists")


def rule_11_egress(args: registry_pb2.ChuteArgs) -> bool:
    """External egress as asked (default off), never for affine or turbovision chutes."""
    egress = args.allow_external_egress if args.HasField("allow_external_egress") else False
    lowered = args.name.lower()
    return egress and "affine" not in lowered and "turbovision" not in lowered


def rule_12_node_selector_limits(selector: NodeSelector) -> None:
    """At most MAX_EXCLUDED_GPUS exclusions (400), not only consumer GPUs (403), and included GPUs
    within MAX_PRICE_SPREAD of each other's price (400)."""
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


def rule_13_fee(caller: Caller, selector: NodeSelector, *, new_chute: bool, accept_fee: bool) -> None:
    """A new chute costs FEE_HOURS of its cheapest node, accepted explicitly (402); the balance must
    cover the fee, also on redeploys (fee 0), unless the account is free (402)."""
    free = caller.has_role(Role.FREE_ACCOUNT)
    fee = FEE_HOURS * selector.hourly_price_usd if new_chute and not free else 0.0
    if fee > 0 and not accept_fee:
        raise PaymentRequired(
            f"DEPLOYMENT FEE NOTICE: deploying this chute costs a one-time fee of ${fee:.2f} "
            f"({FEE_HOURS} hours of its cheapest node). Re-run with --accept-fee (accept_fee=true) to accept."
        )
    if not free and caller.balance <= fee:
        raise PaymentRequired(
            f"Your balance (${caller.balance:.2f}) does not cover the deployment fee (${fee:.2f}); "
            "top up first"
        )


def rule_14_reserved_gpus(selector: NodeSelector, caller: Caller) -> NodeSelector:
    """Ordinary users never land on reserved GPUs unless they exclude others explicitly; returns
    the selector to store."""
    if is_unlimited(caller) or caller.username == SYSTEM_USERNAME:
        return selector
    if not selector.exclude:
        selector = selector.model_copy(update={"exclude": sorted(RESERVED_GPUS)})
    supported = set(selector.supported_gpus)
    if not supported:
        raise InvalidArgument("No supported GPUs match your node_selector")
    if supported <= RESERVED_GPUS:
        raise PermissionDenied("Deploying exclusively on b200/mi300x requires approval")
    return selector


def rule_15_vllm_revision(template: str | None, args: registry_pb2.ChuteArgs) -> None:
    if template == "vllm" and not args.HasField("revision"):
        raise InvalidArgument("vllm chutes must pin a revision (40-hex Hugging Face commit)")


def rule_17_sdk_version(caller: Caller, image: Mapping[Any, Any]) -> None:
    if caller.username != SYSTEM_USERNAME and version_tuple(image["chutes_version"]) < MIN_CHUTES_VERSION:
        raise InvalidArgument(
            f"The image's chutes SDK version ({image['chutes_version'] or 'unknown'}) is too old; "
            f"{'.'.join(map(str, MIN_CHUTES_VERSION))} or newer is required"
        )


def rule_18_mutable(existing: Mapping[Any, Any]) -> None:
    if existing["immutable"]:
        raise PermissionDenied("This chute is immutable and cannot be modified. Only deletion is allowed.")


def rule_19_code_parses(code: str) -> None:
    try:
        ast.parse(code)
    except SyntaxError as error:
        raise InvalidArgument(f"Validation failure: code does not parse as Python: {error}") from None


def rule_19_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(f"Validation failure: invalid chute name {name!r}")


def rule_19_chute_id(username: str, name: str) -> str:
    """uuid5(NAMESPACE_OID, "{username}::chute::{name}"), the name as given."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{username}::chute::{name}"))


def rule_19_slug_base(username: str, name: str) -> str:
    """python-slugify of "{username}-{name}" (58 characters at most), lower-cased, any trailing run
    of other characters than [a-z0-9-] made a dash."""
    return re.sub(r"[^a-z0-9-]+$", "-", slugify(f"{username}-{name}", max_length=58).lower())


def rule_20_cords_or_jobs(args: registry_pb2.ChuteArgs) -> None:
    if not args.cords and not args.jobs:
        raise InvalidArgument("A chute must have at least one cord or one job")
    if args.cords and args.jobs:
        raise InvalidArgument("A chute can have jobs or cords not both.")
