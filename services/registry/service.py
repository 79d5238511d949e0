"""The registry service: chutes, images and shares (spec/chutes-api.md 4).

Reads that every client makes (get a chute, list chutes, get code) are single SQL statements on
the raw asyncpg connection; writes go through SQLAlchemy Core in one transaction each, with
their event in the outbox. RPCs not built yet answer UNIMPLEMENTED (REST 501) naming themselves.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import sqlalchemy as sa
from google.api import httpbody_pb2
from sqlalchemy.dialects.postgresql import insert

from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
from services.kit.auth import Caller, IdentityClient, optional_caller, require_caller
from services.kit.channels import channel_at
from services.kit.db import Database
from services.kit.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ValidationFailed,
    out_of_range,
)
from services.kit.messages import has_field
from services.kit.server import GrpcService, ServiceContext, ServiceSpec
from services.registry import deploy, images
from services.registry.chutes import (
    CHUTE_SELECT,
    IMAGE_SELECT,
    INSTANCES_SELECT,
    SCHEMA_KEYS,
    ResponseCache,
    cache_key,
    chute_message,
    loads,
)
from services.registry.subnets import substrings_managed_by
from services.registry.tables import chute_shares, chutes
from services.registry.tables import images as images_table

Context = grpc.aio.ServicerContext[Any, Any]
NOT_YOURS = "Chute not found, or does not belong to you"

#: Who may see a chute: discoverable (public, or affine by name), the caller's own (`$2`, NULL when
#: anonymous), shared with the caller, or in a subnet the caller manages (`$3`, LIKE patterns).
_VISIBLE = """(c.discoverable OR c.user_id = $2 OR lower(c.name) LIKE ANY($3::text[])
       OR EXISTS (SELECT 1 FROM chute_shares s WHERE s.chute_id = c.chute_id AND s.shared_to = $2))"""

#: The chute a caller means by an id or exact name, as light as possible: what identifies its
#: response (for the cache), not the response. Among same-named chutes the caller's own comes
#: first, then the platform's.
_FIND_CHUTE = f"""
SELECT c.chute_id, c.updated_at, {INSTANCES_SELECT}
FROM chutes c
WHERE (c.chute_id = $1 OR c.name = $1) AND {_VISIBLE}
ORDER BY (c.user_id = $2) DESC NULLS LAST, (c.username = 'chutes') DESC, c.created_at
LIMIT 1
"""

#: Whole rows for building responses, by id.
_CHUTE_ROWS = f"""
SELECT {CHUTE_SELECT}, {IMAGE_SELECT}, {INSTANCES_SELECT}
FROM chutes c JOIN images i ON i.image_id = c.image_id
WHERE c.chute_id = ANY($1::text[])
"""

#: A chute's code, for callers who may see it (subnet admins only through their role).
_CHUTE_CODE = f"""
SELECT c.code FROM chutes c
WHERE (c.chute_id = $1 OR c.name = $1) AND {_VISIBLE}
ORDER BY (c.user_id = $2) DESC NULLS LAST, (c.username = 'chutes') DESC, c.created_at
LIMIT 1
"""


def _patterns(caller: Caller | None, *, admin_only: bool) -> list[str]:
    return [f"%{s}%" for s in substrings_managed_by(caller, admin_only=admin_only)]


def _user_id(caller: Caller | None) -> str | None:
    return caller.user_id if caller else None


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        if context.db is None:
            raise RuntimeError("the registry service needs a database (CHUTES_DATABASE_URL)")
        self.db: Database = context.db
        self.settings = context.settings
        self.identity = IdentityClient(channel_at(context.settings.address_of("identity")))
        self.responses = ResponseCache()

    # ---- images ------------------------------------------------------------------------------

    async def GetImage(self, request: registry_pb2.GetImageRequest, context: Context) -> Any:
        caller = optional_caller()
        async with self.db.engine.connect() as connection:
            row = await images.find_image(connection, request.image_id_or_name, caller)
        if row is None:
            raise NotFound("Image not found, or does not belong to you")
        return images.image_message(row)

    async def ListImages(self, request: registry_pb2.ListImagesRequest, context: Context) -> Any:
        caller = optional_caller()
        limit = request.limit if request.HasField("limit") else 25
        _check_page(request.page, limit, 0)
        visible = (
            images.visible_clause(caller)
            if (caller is None or request.include_public)
            else (images_table.c.user_id == caller.user_id)
        )
        where = [visible]
        if request.HasField("name"):
            where.append(images_table.c.name.ilike(f"%{request.name}%"))
        if request.HasField("tag"):
            where.append(images_table.c.tag.ilike(f"%{request.tag}%"))
        async with self.db.engine.connect() as connection:
            total = await connection.execute(
                sa.select(sa.func.count()).select_from(images_table).where(*where)
            )
            rows = (
                (
                    await connection.execute(
                        sa.select(images_table)
                        .where(*where)
                        .order_by(images_table.c.created_at.desc(), images_table.c.image_id)
                        .limit(limit)
                        .offset(request.page * limit)
                    )
                )
                .mappings()
                .all()
            )
        return registry_pb2.ListImagesResponse(
            total=total.scalar_one(),
            page=request.page,
            limit=limit,
            items=[images.image_message(r) for r in rows],
        )

    async def DeleteImage(self, request: registry_pb2.DeleteImageRequest, context: Context) -> Any:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            used = (
                await connection.execute(
                    sa.select(sa.func.count())
                    .select_from(chutes)
                    .where(chutes.c.image_id == request.image_id)
                )
            ).scalar_one()
            owned = images_table.c.user_id == caller.user_id
            wanted = images_table.c.image_id == request.image_id
            if (
                await connection.execute(sa.select(images_table.c.image_id).where(wanted, owned))
            ).first() is None:
                raise NotFound("Image not found, or does not belong to you")
            if used:
                raise AlreadyExists(f"Image is used by {used} chute(s); delete them first")
            await connection.execute(images_table.delete().where(wanted, owned))
        return registry_pb2.DeleteImageResponse(image_id=request.image_id, deleted=True)

    # ---- chutes: reads ----------------------------------------------------------------------

    async def _responses(self, connection: Any, kind: str, found: list[Any]) -> list[Any]:
        """The cached responses of `found` (light rows), building (from whole rows) those missing.
        For kind "list" each entry is (message with cord_ref_id, the chute's cords)."""
        keys = [cache_key(kind, row) for row in found]
        cached = {key: self.responses.get(key) for key in keys}
        missing = [row["chute_id"] for row, key in zip(found, keys, strict=True) if cached[key] is None]
        if missing:
            tao = self.settings.tao_usd_rate
            for row in await connection.fetch(_CHUTE_ROWS, missing):
                built: Any
                if kind == "list":
                    built = (
                        chute_message(row, priced=True, tao_usd=tao, in_list=True),
                        loads(row["cords"]) or [],
                    )
                else:
                    built = chute_message(row, priced=True, tao_usd=tao)
                key = cache_key(kind, row)
                self.responses.put(key, built)
                cached[key] = built
        # A row that changed between the two queries is answered from its newer build.
        by_id = {key[1]: value for key, value in cached.items() if value is not None}
        return [cached.get(key) or by_id[key[1]] for key in keys]

    async def GetChute(self, request: registry_pb2.GetChuteRequest, context: Context) -> Any:
        caller = optional_caller()
        async with self.db.raw() as connection:
            found = await connection.fetchrow(
                _FIND_CHUTE, request.chute_id_or_name, _user_id(caller), _patterns(caller, admin_only=False)
            )
            if found is None:
                raise NotFound(NOT_YOURS)
            [response] = await self._responses(connection, "get", [found])
        return response

    async def GetChuteCode(self, request: registry_pb2.GetChuteCodeRequest, context: Context) -> Any:
        caller = optional_caller()
        async with self.db.raw() as connection:
            code = await connection.fetchval(
                _CHUTE_CODE, request.chute_id, _user_id(caller), _patterns(caller, admin_only=True)
            )
        if code is None:
            raise NotFound(NOT_YOURS)
        return httpbody_pb2.HttpBody(content_type="text/plain", data=code.encode())

    async def ListChutes(self, request: registry_pb2.ListChutesRequest, context: Context) -> Any:
        caller = optional_caller()
        limit = request.limit if request.HasField("limit") else 25
        _check_page(request.page, limit, request.offset)
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        # Shared chutes are not listed (only readable), as in the real API.
        if caller is None:
            where = ["c.discoverable"]
        elif request.include_public:
            where = [f"(c.discoverable OR c.user_id = {param(caller.user_id)})"]
        else:
            where = [f"c.user_id = {param(caller.user_id)}"]
        source = "chutes c"
        if request.HasField("template") and request.template.strip():
            where.append(
                "c.standard_template IS NULL"
                if request.template == "other"
                else f"c.standard_template = {param(request.template)}"
            )
        if request.HasField("name") and request.name:
            where.append(f"c.name ILIKE {param('%' + request.name + '%')}")
        if request.HasField("exclude") and request.exclude:
            where.append(f"c.name NOT ILIKE {param('%' + request.exclude + '%')}")
        if request.HasField("image") and request.image:
            source = "chutes c JOIN images i ON i.image_id = c.image_id"
            where.append(f"(i.name || ':' || i.tag) ILIKE {param('%' + request.image + '%')}")
        if request.HasField("slug") and request.slug:
            where.append(f"c.slug ILIKE {param(request.slug)}")
        condition = " AND ".join(where)
        offset = request.offset or request.page * limit
        page_sql = (
            f"SELECT c.chute_id, c.updated_at, {INSTANCES_SELECT} FROM {source} WHERE {condition}"
            f" ORDER BY c.invocation_count DESC, c.chute_id LIMIT {limit} OFFSET {offset}"
        )
        async with self.db.raw() as connection:
            total = await connection.fetchval(f"SELECT count(*) FROM {source} WHERE {condition}", *params)
            found = await connection.fetch(page_sql, *params)
            built = await self._responses(connection, "list", found)
        response = registry_pb2.ListChutesResponse(total=total, page=request.page, limit=limit)
        for item, cords in built:
            response.items.append(item)
            if item.cord_ref_id not in response.cord_refs:
                if not request.include_schemas:
                    cords = [{k: v for k, v in cord.items() if k not in SCHEMA_KEYS} for cord in cords]
                response.cord_refs[item.cord_ref_id].extend(cords)
        return response

    # ---- chutes: writes ---------------------------------------------------------------------

    async def _reload(self, chute_id: str) -> registry_pb2.Chute:
        """The response to a write: the chute as stored, without price injection (as the real API)."""
        async with self.db.raw() as connection:
            [row] = await connection.fetch(_CHUTE_ROWS, [chute_id])
        return chute_message(row, priced=False)

    async def DeployChute(self, request: registry_pb2.DeployChuteRequest, context: Context) -> Any:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            chute_id = await deploy.deploy(connection, caller, request.chute, request.accept_fee)
        return await self._reload(chute_id)

    async def UpdateChute(self, request: registry_pb2.UpdateChuteRequest, context: Context) -> Any:
        caller = require_caller()
        _check_update(request)
        async with self.db.engine.begin() as connection:
            found = (
                (
                    await connection.execute(
                        sa.select(chutes.c.chute_id, chutes.c.immutable, chutes.c.public, chutes.c.version)
                        .where(
                            sa.or_(
                                chutes.c.chute_id == request.chute_id_or_name,
                                chutes.c.name == request.chute_id_or_name,
                            ),
                            chutes.c.user_id == caller.user_id,
                        )
                        .with_for_update()
                    )
                )
                .mappings()
                .first()
            )
            if found is None:
                raise NotFound(NOT_YOURS)
            if found["immutable"]:
                raise PermissionDenied(
                    "This chute is immutable and cannot be modified. Only deletion is allowed."
                )
            values: dict[str, Any] = {"updated_at": sa.func.now()}
            for text_field in ("tagline", "readme", "tool_description"):
                if request.HasField(text_field) and getattr(request, text_field).strip():
                    values[text_field] = getattr(request, text_field)
            if request.HasField("logo_id") and request.logo_id:
                values["logo_id"] = request.logo_id
            if not found["public"]:  # public chutes are scaled by the platform, not their owner
                for knob in ("max_instances", "scaling_threshold", "shutdown_after_seconds"):
                    if request.HasField(knob):
                        values[knob] = getattr(request, knob)
            if request.HasField("disabled"):
                values["disabled"] = request.disabled
                if request.disabled and not found["public"]:
                    await connection.execute(
                        sa.text("DELETE FROM instances WHERE chute_id = :c"), {"c": found["chute_id"]}
                    )
            await connection.execute(
                chutes.update().where(chutes.c.chute_id == found["chute_id"]).values(**values)
            )
            await deploy.emit(
                connection, "chute_updated", {"chute_id": found["chute_id"], "version": found["version"]}
            )
        return await self._reload(found["chute_id"])

    async def DeleteChute(self, request: registry_pb2.DeleteChuteRequest, context: Context) -> Any:
        caller = require_caller()
        try:
            uuid.UUID(request.chute_id)
        except ValueError:
            raise InvalidArgument("Must use chute UUID to delete.") from None
        managed = substrings_managed_by(caller, admin_only=True)
        async with self.db.engine.begin() as connection:
            row = (
                (
                    await connection.execute(
                        sa.select(chutes.c.chute_id, chutes.c.user_id, chutes.c.name, chutes.c.version)
                        .where(chutes.c.chute_id == request.chute_id)
                        .with_for_update()
                    )
                )
                .mappings()
                .first()
            )
            if row is None or not (
                row["user_id"] == caller.user_id or any(s in row["name"].lower() for s in managed)
            ):
                raise NotFound(NOT_YOURS)
            # Shares, instances and rolling updates cascade; history keeps the deletion time.
            await connection.execute(chutes.delete().where(chutes.c.chute_id == row["chute_id"]))
            await deploy.emit(
                connection, "chute_deleted", {"chute_id": row["chute_id"], "version": row["version"]}
            )
        return registry_pb2.DeleteChuteResponse(chute_id=row["chute_id"], deleted=True)

    # ---- shares -----------------------------------------------------------------------------

    async def _share_parties(self, chute_ref: str, user_ref: str, caller: Caller) -> tuple[Any, Caller]:
        async with self.db.engine.connect() as connection:
            chute = (
                (
                    await connection.execute(
                        sa.select(chutes.c.chute_id, chutes.c.name, chutes.c.public).where(
                            chutes.c.user_id == caller.user_id,
                            sa.or_(
                                sa.func.lower(chutes.c.name) == chute_ref.lower(),
                                chutes.c.chute_id == chute_ref,
                            ),
                        )
                    )
                )
                .mappings()
                .first()
            )
        if chute is None:
            raise NotFound(f"Did not find target chute {chute_ref}, or it does not belong to you")
        target = await self.identity.find_user(user_ref)
        if target is None:
            raise NotFound("Could not find target user to share with")
        return chute, target

    async def ShareChute(self, request: registry_pb2.ShareChuteRequest, context: Context) -> Any:
        caller = require_caller()
        chute, target = await self._share_parties(request.chute_id_or_name, request.user_id_or_name, caller)
        if chute["public"]:
            raise InvalidArgument("Chute is public, no need to share.")
        if target.user_id == caller.user_id:
            raise InvalidArgument("Cannot share a chute with yourself")
        async with self.db.engine.begin() as connection:
            await connection.execute(
                insert(chute_shares)
                .values(chute_id=chute["chute_id"], shared_by=caller.user_id, shared_to=target.user_id)
                .on_conflict_do_nothing()
            )
        return registry_pb2.ShareChuteResponse(
            status=f"Successfully shared chute.name='{chute['name']}' with user.username='{target.username}'"
        )

    async def UnshareChute(self, request: registry_pb2.UnshareChuteRequest, context: Context) -> Any:
        caller = require_caller()
        chute, target = await self._share_parties(request.chute_id_or_name, request.user_id_or_name, caller)
        async with self.db.engine.begin() as connection:
            await connection.execute(
                chute_shares.delete().where(
                    chute_shares.c.chute_id == chute["chute_id"],
                    chute_shares.c.shared_by == caller.user_id,
                    chute_shares.c.shared_to == target.user_id,
                )
            )
        return registry_pb2.UnshareChuteResponse(
            status=f"Successfully unshared chute.name='{chute['name']}' "
            f"with user.username='{target.username}' (if share exists)"
        )


def _check_page(page: int, limit: int, offset: int) -> None:
    problems = out_of_range(
        (("query", "page"), page, 0, 100),
        (("query", "limit"), limit, 1, 5000),
        (("query", "offset"), offset, 0, 5000),
    )
    if problems:
        raise ValidationFailed(problems)
    if page and offset:
        raise InvalidArgument("Cannot specify both page and offset, select <= 1 of these.")


def _check_update(request: registry_pb2.UpdateChuteRequest) -> None:
    problems = []
    for name, longest in (("tagline", 1024), ("readme", 16384), ("tool_description", 16384)):
        if has_field(request, name) and len(getattr(request, name)) > longest:
            problems.append(
                FieldViolation(
                    ("body", name), f"String should have at most {longest} characters", "string_too_long"
                )
            )
    problems += out_of_range(
        *(
            (("body", name), getattr(request, name), low, high)
            for name, low, high in (
                ("max_instances", 1, 100),
                ("scaling_threshold", 0.0, 1.0),
                ("shutdown_after_seconds", 60, 604_800),
            )
            if has_field(request, name)
        )
    )
    if problems:
        raise ValidationFailed(problems)


SPEC = ServiceSpec(
    name="registry",
    grpc_services=(GrpcService.of(registry_pb2, registry_pb2_grpc, "RegistryService"),),
    make_servicer=RegistryServicer,
)
