"""Promoting an affine chute to a TEE copy (`PUT /chutes/{chute_id}/teeify`, spec chutes-api.md
4.21), as the real API's route does it.

The pure parts come first, each testable alone (tests/test_teeify.py): the checks in the real
order, the H200 sizing formula and the AST rewrite of the chute's code. `teeify_chute()` then runs
them in one transaction that inserts the copy and writes its `chute_created` event.

Two deliberate differences from the real API, both for input it cannot handle: code that cannot be
rewritten (does not parse, has no builder call, passes a rewritten argument positionally) is a
400 naming the problem where the real API answers 500; and a copy whose id is already taken (the
caller owns a chute of that name) is the same 409 as an existing copy, where the real API's insert
would fail with a 500.
"""

from __future__ import annotations

import ast
import math
import uuid
from collections.abc import Mapping
from typing import Any

import pydantic
import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from chutes.chute import NodeSelector
from chutes.gpu import GPUS
from services.kit.caller import Caller
from services.kit.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from services.registry import store
from services.registry.deploy import rules
from services.registry.models import chutes, images
from services.registry.subnets import subnet_of, substrings_managed_by

#: The GPU every TEE copy runs on, and its VRAM (140 GB).
TEE_GPU = "h200"
TEE_GPU_VRAM_GB = GPUS[TEE_GPU].vram_gb
#: The most GPUs a TEE copy asks for (one node).
MAX_TEE_GPUS = 8
#: VRAM per GPU assumed when the original selector matches no GPU (the real API's fallback).
FALLBACK_VRAM_GB = 80
#: The calls whose arguments the rewrite sets (by function name, bare or as an attribute).
BUILDERS = ("build_sglang_chute", "build_vllm_chute", "Chute")
#: Where each builder takes the rewritten arguments positionally (the SDK's signatures): a call
#: passing that many positional arguments already gives the argument, and adding it as a keyword
#: would make the code fail with "got multiple values". `name` is no parameter of the templates.
_POSITIONS: dict[str, dict[str, int]] = {
    "Chute": {"name": 1, "node_selector": 7, "tee": 15},
    "build_vllm_chute": {"node_selector": 2, "tee": 13},
    "build_sglang_chute": {"node_selector": 2, "tee": 13},
}
#: The columns a TEE copy takes from its original unchanged (spec 4.21's list).
COPIED_COLUMNS = (
    "user_id", "username", "tagline", "readme", "tool_description", "logo_id", "image_id", "filename",
    "ref_str", "public", "cords", "jobs", "standard_template", "chutes_version", "concurrency",
    "revision", "scaling_threshold", "max_instances", "shutdown_after_seconds", "allow_external_egress",
    "encrypted_fs",
)  # fmt: skip


# ---- the checks, in the real order ------------------------------------------------------------


def parse_chute_id(chute_id: str) -> str:
    try:
        uuid.UUID(chute_id)
    except ValueError:
        raise InvalidArgument("Must use chute UUID for teeify.") from None
    return chute_id


def require_subnet_admin(caller: Caller, chute_name: str) -> None:
    """The real API's subnet_role_accessible(admin=True): the caller is a subnet_admin of the
    subnet the chute's name belongs to (the first integrated subnet whose substring it contains)."""
    subnet = subnet_of(chute_name)
    if subnet is None or subnet.substring not in substrings_managed_by(caller, admin_only=True):
        raise PermissionDenied("Only subnet admins can promote chutes to TEE")


def require_affine(chute_name: str) -> None:
    if "affine" not in chute_name.lower():
        raise InvalidArgument("Only chutes with 'affine' in the name can be TEE-ified")


def tee_name_of(chute_name: str) -> str:
    return f"{chute_name}-TEE"


# ---- sizing -----------------------------------------------------------------------------------


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 that is >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def tee_gpu_count(node_selector: Mapping[str, Any]) -> int:
    """H200s holding at least the VRAM the original selector guarantees: gpu_count times the
    smallest VRAM among its supported GPUs, rounded up to whole H200s, then to a power of 2 (tensor
    parallelism wants one), at most MAX_TEE_GPUS."""
    try:
        selector = NodeSelector(**node_selector)
    except pydantic.ValidationError as error:
        raise InvalidArgument(f"The chute's stored node_selector is invalid: {error}") from None
    supported = selector.supported_gpus
    min_vram = min(GPUS[gpu].vram_gb for gpu in supported) if supported else FALLBACK_VRAM_GB
    needed = math.ceil(selector.gpu_count * min_vram / TEE_GPU_VRAM_GB)
    return min(next_power_of_2(needed), MAX_TEE_GPUS)


def tee_node_selector(gpu_count: int) -> dict[str, Any]:
    """The node selector a TEE copy stores (exactly these two keys, as the real API stores it)."""
    return {"gpu_count": gpu_count, "include": [TEE_GPU]}


# ---- the code rewrite -------------------------------------------------------------------------


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


class _TeeRewrite(ast.NodeTransformer):
    """Sets node_selector, tee and name on every builder call: a keyword already given keeps its
    place with the new value, a missing one is appended."""

    def __init__(self, gpu_count: int, tee_name: str) -> None:
        self.gpu_count = gpu_count
        self.tee_name = tee_name
        self.rewritten = 0

    def _values(self) -> dict[str, ast.expr]:
        selector = ast.Call(
            func=ast.Name(id="NodeSelector", ctx=ast.Load()),
            args=[],
            keywords=[
                ast.keyword(arg="gpu_count", value=ast.Constant(self.gpu_count)),
                ast.keyword(arg="include", value=ast.List(elts=[ast.Constant(TEE_GPU)], ctx=ast.Load())),
            ],
        )
        return {"node_selector": selector, "tee": ast.Constant(True), "name": ast.Constant(self.tee_name)}

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        callee = _callee(node)
        if callee not in BUILDERS:
            return node
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise InvalidArgument(
                f"Cannot rewrite the chute's code for TEE: line {node.lineno} calls {callee} with *args, "
                "so the arguments teeify sets cannot be told apart"
            )
        for argument, position in _POSITIONS[callee].items():
            if len(node.args) > position:
                raise InvalidArgument(
                    f"Cannot rewrite the chute's code for TEE: line {node.lineno} passes {callee}'s "
                    f"{argument} positionally; pass it as {argument}=... instead"
                )
        values = self._values()
        keywords = [
            ast.keyword(arg=kw.arg, value=values.pop(kw.arg)) if kw.arg in values else kw
            for kw in node.keywords
        ]
        node.keywords = keywords + [ast.keyword(arg=arg, value=value) for arg, value in values.items()]
        self.rewritten += 1
        return node


def rewrite_for_tee(code: str, gpu_count: int, tee_name: str) -> str:
    """The chute's code with every builder call on `gpu_count` H200s, tee=True and named
    `tee_name`, re-emitted by ast.unparse (comments and formatting are lost, as in the real API),
    plus the real API's trailing line renaming the chute object (`chute.chute`: the templates'
    pack; a plain `Chute` file gets the same line, as the real API writes it)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        raise InvalidArgument(
            f"Cannot rewrite the chute's code for TEE: it does not parse: {error}"
        ) from None
    rewrite = _TeeRewrite(gpu_count, tee_name)
    tree = ast.fix_missing_locations(rewrite.visit(tree))
    if not rewrite.rewritten:
        # The real API would store the code unchanged under a TEE name; a TEE copy that does not
        # ask for a TEE is no copy at all.
        raise InvalidArgument(
            "Cannot rewrite the chute's code for TEE: it has no call to " + ", ".join(BUILDERS)
        )
    return f"{ast.unparse(tree)}\nchute.chute._name = {ast.unparse(ast.Constant(tee_name))}\n"


# ---- the transaction --------------------------------------------------------------------------
# Its two reads are here rather than in store.py: they serve this route alone.


async def _lock_source(connection: AsyncConnection, chute_id: str) -> RowMapping | None:
    """The chute with its image's patch_version, locked: concurrent teeify calls of one chute run
    one after the other, so the second sees the first's copy (409)."""
    query = (
        sa.select(chutes, images.c.patch_version)
        .join(images, images.c.image_id == chutes.c.image_id)
        .where(chutes.c.chute_id == chute_id)
        .with_for_update(of=chutes)
    )
    return (await connection.execute(query)).mappings().first()


async def _existing_copy(
    connection: AsyncConnection, owner_id: str, tee_name: str, chute_id: str
) -> str | None:
    query = sa.select(chutes.c.chute_id).where(
        sa.or_(
            sa.and_(chutes.c.name == tee_name, chutes.c.user_id == owner_id), chutes.c.chute_id == chute_id
        )
    )
    found: str | None = (await connection.execute(query)).scalar()
    return found


async def teeify_chute(connection: AsyncConnection, caller: Caller, chute_id: str) -> str:
    """Create the TEE copy of an affine chute inside the caller's transaction; returns its id.
    The copy belongs to the original's owner, but its id and slug are made from the caller's
    username (the real API's quirk, spec 11.12)."""
    source = await _lock_source(connection, parse_chute_id(chute_id))
    if source is None:
        raise NotFound("Chute not found")
    require_subnet_admin(caller, source["name"])
    require_affine(source["name"])
    tee_name = tee_name_of(source["name"])
    new_id = rules.rule_19_chute_id(caller.username, tee_name)
    existing = await _existing_copy(connection, source["user_id"], tee_name, new_id)
    if existing is not None:
        raise AlreadyExists(f"TEE version already exists: {existing}")
    gpu_count = tee_gpu_count(source["node_selector"])
    code = rewrite_for_tee(source["code"], gpu_count, tee_name)
    rules.rule_19_name(tee_name)
    version = rules.rule_9_version(source, code)
    slug = await store.unique_slug(connection, rules.rule_19_slug_base(caller.username, tee_name))
    await store.insert_chute(
        connection,
        {column: source[column] for column in COPIED_COLUMNS}
        | {
            "chute_id": new_id,
            "name": tee_name,
            "slug": slug,
            "code": code,
            "version": version,
            "node_selector": tee_node_selector(gpu_count),
            "tee": True,
            "immutable": True,
            "lock_modules": bool(source["lock_modules"]),
        },
    )
    await store.emit(
        connection, "chute_created", {"chute_id": new_id, "version": version, "job_only": not source["cords"]}
    )
    return new_id
