"""The registry service: chutes, images and shares (the real API's /chutes, /images routes), and
the control plane of the gateway's chute hosts (delta ADS: xds.py, fed from the tables by
routing.py).

Handlers parse, call the store (store.py, every query), and build the answer (views.py). Reads of
chutes are answered from a cache of built responses, keyed by what identifies a response exactly.
RPCs not built yet answer UNIMPLEMENTED (REST 501) naming themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from envoy.service.accesslog.v3 import als_pb2_grpc
from google.api import httpbody_pb2

from chutes.registry.v1 import (
    internal_pb2,
    internal_pb2_grpc,
    miners_pb2,
    miners_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.kit.auth import optional_caller, require_caller
from services.kit.caller import Caller
from services.kit.channels import channel_at
from services.kit.db import Database
from services.kit.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ValidationFailed,
    out_of_range,
)
from services.kit.identity_client import IdentityClient
from services.kit.messages import has_field
from services.kit.requests import Context, page_of
from services.kit.roles import Role
from services.kit.server import Closable, GrpcService, ServiceContext, ServiceSpec
from services.kit.settings import Settings
from services.registry import (
    ads,
    affine,
    anonymous_reads,
    bounties,
    deploy,
    fleet_store,
    hf_info,
    image_store,
    instance_logs,
    public_copies,
    store,
    views,
    xds,
)
from services.registry.activity import Activity
from services.registry.deploy import easy, teeify
from services.registry.deploy.request import SCALING_RANGES
from services.registry.freshness import ReadFollower
from services.registry.job_placements import JobPlacementServicer
from services.registry.miners import MinerServicer, require_miner
from services.registry.routing import RouteFollower
from services.registry.scheduler import Scheduler
from services.registry.subnets import substrings_managed_by
from services.registry.utilization import MetricsUtilization

NOT_YOURS = "Chute not found, or does not belong to you"


def _viewer(caller: Caller | None, *, admin_only: bool) -> store.Viewer:
    patterns = [f"%{s}%" for s in substrings_managed_by(caller, admin_only=admin_only)]
    return store.Viewer(caller.user_id if caller else None, patterns)


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, context: ServiceContext) -> None:
        if context.db is None:
            raise RuntimeError("the registry service needs a database (CHUTES_DATABASE_URL)")
        self.db: Database = context.db
        self.settings = context.settings
        self.identity = IdentityClient(channel_at(context.settings.address_of("identity")))
        self.owners = affine.Owners(self.identity)
        self.responses = views.ResponseCache()
        self.reads = views.ReadCache(self.responses)
        self.hf_infos = hf_info.HfInfoCache()
        self.routing = xds.RoutingTable(context.settings.chute_domain)
        self.ads = ads.AdsServicer(self.routing)
        self.activity = Activity(self.db, on_wanted=lambda: self.scheduler.wake())
        self.utilization = MetricsUtilization(context.settings.address_of("metrics"))
        self.scheduler = Scheduler(self.db, self.utilization)
        self.miners = MinerServicer(self.db, on_change=self.scheduler.wake)
        self.job_placements = JobPlacementServicer(self.db, self.scheduler)

    # ---- images ------------------------------------------------------------------------------

    async def GetImage(self, request: registry_pb2.GetImageRequest, context: Context) -> registry_pb2.Image:
        caller = optional_caller()
        async with self.db.engine.connect() as connection:
            row = await image_store.find_image(connection, request.image_id_or_name, caller)
        if row is None:
            raise NotFound("Image not found, or does not belong to you")
        return views.image_message(row)

    async def ListImages(
        self, request: registry_pb2.ListImagesRequest, context: Context
    ) -> registry_pb2.ListImagesResponse:
        caller = optional_caller()
        page = page_of(request.page, request.limit if request.HasField("limit") else None)
        async with self.db.engine.connect() as connection:
            total, rows = await image_store.list_images(
                connection,
                caller,
                include_public=request.include_public,
                name=request.name if request.HasField("name") else None,
                tag=request.tag if request.HasField("tag") else None,
                limit=page.limit,
                offset=page.offset,
            )
        return registry_pb2.ListImagesResponse(
            total=total, page=page.page, limit=page.limit, items=[views.image_message(r) for r in rows]
        )

    async def DeleteImage(
        self, request: registry_pb2.DeleteImageRequest, context: Context
    ) -> registry_pb2.DeleteImageResponse:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            if not await image_store.delete_image(connection, request.image_id, caller.user_id):
                raise NotFound("Image not found, or does not belong to you")
        return registry_pb2.DeleteImageResponse(image_id=request.image_id, deleted=True)

    # ---- chutes: reads ----------------------------------------------------------------------

    async def _responses(self, connection: Any, kind: str, found: list[Any]) -> list[Any]:
        """The cached responses of `found` (light rows), building (from whole rows) those missing.
        For kind "list" each entry is (message with cord_ref_id, the chute's cords)."""
        keys = [views.cache_key(kind, row) for row in found]
        cached = {key: self.responses.get(key) for key in keys}
        missing = [row["chute_id"] for row, key in zip(found, keys, strict=True) if cached[key] is None]
        if missing:
            tao = self.settings.tao_usd_rate
            for row in await store.chute_rows(connection, missing):
                built: Any
                if kind == "list":
                    built = (
                        views.chute_message(row, priced=True, tao_usd=tao, in_list=True),
                        views.loads(row["cords"]) or [],
                    )
                else:
                    built = views.chute_message(row, priced=True, tao_usd=tao)
                key = views.cache_key(kind, row)
                self.responses.put(key, built)
                cached[key] = built
        # A row that changed between the two queries is answered from its newer build.
        by_id = {key[1]: value for key, value in cached.items() if value is not None}
        return [cached.get(key) or by_id[key[1]] for key in keys]

    async def GetChute(self, request: registry_pb2.GetChuteRequest, context: Context) -> registry_pb2.Chute:
        answer, live = await self.get_chute(
            request.chute_id_or_name, _viewer(optional_caller(), admin_only=False)
        )
        return answer.message(live)

    async def GetChuteJson(
        self, request: registry_pb2.GetChuteRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        viewer = _viewer(optional_caller(), admin_only=False)
        answer, live = await self.get_chute(request.chute_id_or_name, viewer)
        return httpbody_pb2.HttpBody(content_type="application/json", data=answer.json(live))

    def cached_chute(
        self, reference: str, viewer: store.Viewer
    ) -> tuple[views.Answer, dict[str, Any]] | None:
        """The answer the read cache holds for `viewer` and its live values now; None if it holds
        none (or its bounty expired)."""
        answer = self.reads.get((reference, viewer.user_id, *viewer.subnet_patterns))
        if answer is None:
            return None
        live = answer.live(time.monotonic())
        return None if live is None else (answer, live)

    async def get_chute(self, reference: str, viewer: store.Viewer) -> tuple[views.Answer, dict[str, Any]]:
        """The answer (cached, or read and cached) and its live values now."""
        # What the answer depends on besides the tables: who asks (their own, shared and subnet
        # chutes are visible to them only).
        key = (reference, viewer.user_id, *viewer.subnet_patterns)
        now = time.monotonic()
        answer = self.reads.get(key)
        live = answer.live(now) if answer is not None else None
        if answer is None or live is None:
            generation = self.reads.generation
            async with self.db.raw() as connection:
                row = await store.get_chute(connection, reference, viewer)
            if row is None:
                raise NotFound(NOT_YOURS)
            answer = views.Answer(
                row["chute_id"],
                row,
                self.settings.tao_usd_rate,
                row["bounty_age"],
                row["bounty_left"],
                row["manual_boost"],
                now,
            )
            self.reads.put(key, answer, generation)
            live = {"bounty_age": row["bounty_age"], "manual_boost": row["manual_boost"]}
        return answer, live

    async def GetChuteCode(
        self, request: registry_pb2.GetChuteCodeRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        viewer = _viewer(optional_caller(), admin_only=True)
        async with self.db.raw() as connection:
            code = await store.chute_code(connection, request.chute_id, viewer)
        if code is None:
            raise NotFound(NOT_YOURS)
        return httpbody_pb2.HttpBody(content_type="text/plain", data=code.encode())

    async def ListChutes(
        self, request: registry_pb2.ListChutesRequest, context: Context
    ) -> registry_pb2.ListChutesResponse:
        response, _ = await self._list_chutes(request, json=False)
        return response

    async def ListChutesJson(
        self, request: registry_pb2.ListChutesRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        response, body = await self._list_chutes(request, json=True)
        return body or views.json_body(response)

    async def _list_chutes(
        self, request: registry_pb2.ListChutesRequest, *, json: bool
    ) -> tuple[registry_pb2.ListChutesResponse, httpbody_pb2.HttpBody | None]:
        """The page (cached, or built and cached when it shows no live bounty) and, with `json`,
        its JSON, kept with it once made."""
        caller = optional_caller()
        page = page_of(request.page, request.limit if request.HasField("limit") else None, request.offset)
        wanted = store.ChuteFilter(
            caller_id=caller.user_id if caller else None,
            include_public=request.include_public,
            template=request.template if request.HasField("template") else None,
            name=request.name,
            exclude=request.exclude,
            image=request.image,
            slug=request.slug,
        )
        key = (wanted, page.page, page.limit, page.offset, request.include_schemas)
        cached: views.CachedPage | None = self.reads.get_list(key)
        if cached is not None:
            if json and cached.body is None:
                cached.body = views.json_body(cached.response)
            return cached.response, cached.body
        generation = self.reads.generation
        async with self.db.raw() as connection:
            total, found = await store.list_chutes(connection, wanted, limit=page.limit, offset=page.offset)
            built = await self._responses(connection, "list", found)
        response = registry_pb2.ListChutesResponse(total=total, page=page.page, limit=page.limit)
        for (item, cords), light in zip(built, found, strict=True):
            response.items.append(views.with_live_boosts(item, light))
            if item.cord_ref_id not in response.cord_refs:
                if not request.include_schemas:
                    cords = [{k: v for k, v in cord.items() if k not in views.SCHEMA_KEYS} for cord in cords]
                response.cord_refs[item.cord_ref_id].extend(cords)
        # A live bounty's amount grows by the second: such a page is built again each time.
        body = views.json_body(response) if json else None
        if all(light["bounty_age"] is None for light in found):
            self.reads.put_list(key, views.CachedPage(response, body), generation)
        return response, body

    async def GetChuteHfInfo(
        self, request: registry_pb2.GetChuteHfInfoRequest, context: Context
    ) -> registry_pb2.HfInfo:
        require_miner()
        info = self.hf_infos.get(request.chute_id)
        if info is None:
            async with self.db.raw() as connection:
                row = await store.code_and_revision(connection, request.chute_id)
            info = hf_info.hf_info(row["code"], row["revision"]) if row is not None else None
            if info is None:
                raise NotFound("Chute not found or does not use a Hugging Face model")
            self.hf_infos.put(request.chute_id, info)
        return registry_pb2.HfInfo(repo_id=info.repo_id, revision=info.revision)

    # ---- running chutes ---------------------------------------------------------------------

    async def StreamInstanceLogs(
        self, request: registry_pb2.StreamInstanceLogsRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        caller = require_caller()
        backfill = instance_logs.backfill_of(request.backfill if request.HasField("backfill") else None)
        async with self.db.raw() as connection:
            host, port = await instance_logs.readable_instance(connection, request.instance_id, caller)
        async for chunk in instance_logs.relay(host, port, backfill):
            yield chunk

    async def WarmupChute(
        self, request: registry_pb2.WarmupChuteRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Want the chute (the scheduler starts an instance), then report until it is hot: SSE
        `data: {"status", "log"}` frames as the real API sends them, or one JSON snapshot (quick)."""
        viewer = _viewer(require_caller(), admin_only=False)
        async with self.db.raw() as connection:
            found = await store.find_chute(connection, request.chute_id_or_name, viewer)
            if found is None:
                raise NotFound(NOT_YOURS)
            chute_id = found["chute_id"]
            await fleet_store.mark_wanted(connection, chute_id)
            await bounties.cold(connection, chute_id)
        self.scheduler.wake()
        if request.quick:
            async with self.db.raw() as connection:
                instances = await fleet_store.warmup_instances(connection, chute_id)
                [bounty] = await bounties.live(connection, [chute_id]) or [None]
            hot = any(i["active"] for i in instances)
            # What the published CLI's dashboard reads (its GPU tracking needs the GPU fields).
            yield _json_body(
                {
                    "status": "hot" if hot else "cold",
                    "instance_count": sum(1 for i in instances if i["active"]),
                    "bounty": None
                    if bounty is None
                    else {"amount": bounties.amount(bounty["age"]), "boost": bounties.boost(bounty["age"])},
                    "instances": [dict(i) for i in instances],
                }
            )
            return
        deadline = time.monotonic() + WARMUP_SECONDS
        last_frame = 0.0
        while time.monotonic() < deadline:
            route = self.routing.get(chute_id)
            if route is not None and route.instances:
                await self._routed()
                count = len(route.instances)
                yield _sse({"status": "hot", "log": f"chute is hot, {count} instances available"})
                return
            if time.monotonic() - last_frame >= WARMUP_FRAME_SECONDS:
                last_frame = time.monotonic()
                why = " (no connected node can run it yet)" if chute_id in self.scheduler.unplaceable else ""
                yield _sse({"status": "cold", "log": f"waiting for instances ...{why}"})
                async with self.db.raw() as connection:
                    await fleet_store.mark_wanted(connection, chute_id)
                    await bounties.cold(connection, chute_id)
            await asyncio.sleep(WARMUP_POLL_SECONDS)

    async def _routed(self) -> None:
        """Wait (briefly) until the gateway has applied the routes, so "hot" is callable."""
        try:
            await asyncio.wait_for(self.routing.wait_acked(), ROUTED_WAIT_SECONDS)
        except TimeoutError:
            pass

    async def ListBoostedChutes(
        self, request: registry_pb2.ListBoostedChutesRequest, context: Context
    ) -> registry_pb2.ListBoostedChutesResponse:
        async with self.db.raw() as connection:
            rows = await store.boosted_chutes(connection)
        return registry_pb2.ListBoostedChutesResponse(items=[views.boosted_message(r) for r in rows])

    async def ListAffineAvailableChutes(
        self, request: registry_pb2.ListAffineAvailableChutesRequest, context: Context
    ) -> registry_pb2.ListAffineAvailableChutesResponse:
        async with self.db.raw() as connection:
            rows = await store.affine_chutes(connection)
        owners = await self.owners.of({r["user_id"] for r in rows})
        return registry_pb2.ListAffineAvailableChutesResponse(
            items=[
                views.affine_message(r, owner.hotkey)
                for r in rows
                if affine.available(owner := owners[r["user_id"]]) and owner is not None
            ]
        )

    async def ListRollingUpdates(
        self, request: registry_pb2.ListRollingUpdatesRequest, context: Context
    ) -> registry_pb2.ListRollingUpdatesResponse:
        async with self.db.raw() as connection:
            rows = await fleet_store.rolling_updates(connection)
        return registry_pb2.ListRollingUpdatesResponse(items=[views.rolling_update_message(r) for r in rows])

    # ---- chutes: writes ---------------------------------------------------------------------

    def _wrote(self, chute_id: str) -> None:
        """This registry committed a change of the chute: its cached answers go now. The change's
        notification drops them too (on every replica), but it may reach this one after the
        client's next read: a client that changed a chute reads its change (read your writes)."""
        self.reads.changed(chute_id)

    async def _reload(self, chute_id: str) -> registry_pb2.Chute:
        """The response to a write: the chute as stored, without price injection (as the real API)."""
        async with self.db.raw() as connection:
            [row] = await store.chute_rows(connection, [chute_id])
        return views.chute_message(row, priced=False)

    async def DeployChute(
        self, request: registry_pb2.DeployChuteRequest, context: Context
    ) -> registry_pb2.Chute:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            chute_id = await deploy.deploy(connection, caller, request.chute, request.accept_fee)
        return await self._reload(chute_id)

    async def TeeifyChute(
        self, request: registry_pb2.TeeifyChuteRequest, context: Context
    ) -> registry_pb2.Chute:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            chute_id = await teeify.teeify_chute(connection, caller, request.chute_id)
        # Answered priced, as GET /chutes/{id} is (the real route injects price and multiplier),
        # with the bounty the real API gives the new chute once it is committed.
        async with self.db.raw() as connection:
            await bounties.create(connection, chute_id)
            [row] = await store.chute_rows(connection, [chute_id])
            light = await store.find_chute(connection, chute_id, store.Viewer(row["user_id"], []))
        return views.with_live_boosts(
            views.chute_message(row, priced=True, tao_usd=self.settings.tao_usd_rate), light
        )

    async def EasyDeployVllmChute(
        self, request: registry_pb2.VllmChuteArgs, context: Context
    ) -> registry_pb2.Chute:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            chute_id = await easy.deploy_vllm(connection, caller, request)
        return await self._reload(chute_id)

    async def EasyDeployDiffusionChute(
        self, request: registry_pb2.DiffusionChuteArgs, context: Context
    ) -> registry_pb2.Chute:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            chute_id = await easy.deploy_diffusion(connection, caller, request)
        return await self._reload(chute_id)

    async def UpdateChute(
        self, request: registry_pb2.UpdateChuteRequest, context: Context
    ) -> registry_pb2.Chute:
        caller = require_caller()
        _check_update(request)
        async with self.db.engine.begin() as connection:
            found = await store.lock_own_chute(connection, caller.user_id, request.chute_id_or_name)
            if found is None:
                raise NotFound(NOT_YOURS)
            if found["immutable"]:
                raise PermissionDenied(
                    "This chute is immutable and cannot be modified. Only deletion is allowed."
                )
            values = _update_values(request, public=found["public"])
            if values.get("disabled") and not found["public"]:
                await store.delete_instances(connection, found["chute_id"])
                await store.delete_bounty(connection, found["chute_id"])
            await store.update_chute(connection, found["chute_id"], values)
            await store.emit(
                connection, "chute_updated", {"chute_id": found["chute_id"], "version": found["version"]}
            )
        self._wrote(found["chute_id"])
        return await self._reload(found["chute_id"])

    async def DeleteChute(
        self, request: registry_pb2.DeleteChuteRequest, context: Context
    ) -> registry_pb2.DeleteChuteResponse:
        caller = require_caller()
        try:
            uuid.UUID(request.chute_id)
        except ValueError:
            raise InvalidArgument("Must use chute UUID to delete.") from None
        managed = substrings_managed_by(caller, admin_only=True)
        async with self.db.engine.begin() as connection:
            row = await store.lock_chute(connection, request.chute_id)
            if row is None or not (
                row["user_id"] == caller.user_id or any(s in row["name"].lower() for s in managed)
            ):
                raise NotFound(NOT_YOURS)
            await store.delete_chute(connection, row["chute_id"])
            await store.emit(
                connection, "chute_deleted", {"chute_id": row["chute_id"], "version": row["version"]}
            )
        self._wrote(row["chute_id"])
        return registry_pb2.DeleteChuteResponse(chute_id=row["chute_id"], deleted=True)

    # ---- shares -----------------------------------------------------------------------------

    async def _share_parties(self, chute_ref: str, user_ref: str, caller: Caller) -> tuple[Any, Caller]:
        async with self.db.engine.connect() as connection:
            chute = await store.own_chute_for_sharing(connection, caller.user_id, chute_ref)
        if chute is None:
            raise NotFound(f"Did not find target chute {chute_ref}, or it does not belong to you")
        target = await self.identity.find_user(user_ref)
        if target is None:
            raise NotFound("Could not find target user to share with")
        return chute, target

    async def ShareChute(
        self, request: registry_pb2.ShareChuteRequest, context: Context
    ) -> registry_pb2.ShareChuteResponse:
        caller = require_caller()
        chute, target = await self._share_parties(request.chute_id_or_name, request.user_id_or_name, caller)
        if chute["public"]:
            raise InvalidArgument("Chute is public, no need to share.")
        if target.user_id == caller.user_id:
            raise InvalidArgument("Cannot share a chute with yourself")
        async with self.db.engine.begin() as connection:
            await store.share(connection, chute["chute_id"], caller.user_id, target.user_id)
        self._wrote(chute["chute_id"])
        return registry_pb2.ShareChuteResponse(
            status=f"Successfully shared chute.name='{chute['name']}' with user.username='{target.username}'"
        )

    async def UnshareChute(
        self, request: registry_pb2.UnshareChuteRequest, context: Context
    ) -> registry_pb2.UnshareChuteResponse:
        caller = require_caller()
        chute, target = await self._share_parties(request.chute_id_or_name, request.user_id_or_name, caller)
        async with self.db.engine.begin() as connection:
            await store.unshare(connection, chute["chute_id"], caller.user_id, target.user_id)
        self._wrote(chute["chute_id"])
        return registry_pb2.UnshareChuteResponse(
            status=f"Successfully unshared chute.name='{chute['name']}' "
            f"with user.username='{target.username}' (if share exists)"
        )

    # ---- public copies ----------------------------------------------------------------------

    async def MakeChutesPublic(
        self, request: registry_pb2.MakeChutesPublicRequest, context: Context
    ) -> registry_pb2.MakeChutesPublicResponse:
        caller = require_caller()
        async with self.db.engine.begin() as connection:
            outcome = await public_copies.make_public(connection, caller, list(request.chutes))
        async with self.db.raw() as connection:
            for chute_id in outcome.created:  # as the real API: a new public chute gets a bounty
                await bounties.create(connection, chute_id)
        return registry_pb2.MakeChutesPublicResponse(
            chutes=[views.public_copy_message(e) for e in outcome.chutes],
            deleted=[views.public_copy_message(e) for e in outcome.deleted],
        )

    # ---- bounties ---------------------------------------------------------------------------

    async def ListBounties(
        self, request: registry_pb2.ListBountiesRequest, context: Context
    ) -> registry_pb2.ListBountiesResponse:
        async with self.db.raw() as connection:
            rows = await bounties.live(connection)
        return registry_pb2.ListBountiesResponse(items=[views.bounty_message(r) for r in rows])

    async def IncreaseChuteBounty(
        self, request: registry_pb2.IncreaseChuteBountyRequest, context: Context
    ) -> registry_pb2.IncreaseChuteBountyResponse:
        caller = require_caller()
        if not caller.has_role(Role.BILLING_ADMIN):
            raise PermissionDenied("Only billing admins may perform this action")
        boost = request.boost if request.HasField("boost") else None
        async with self.db.raw() as connection:
            outcome = await bounties.increase(connection, request.chute_id, boost)
        if outcome is None:
            raise NotFound("Chute not found")
        self._wrote(request.chute_id)
        return registry_pb2.IncreaseChuteBountyResponse(**dataclasses.asdict(outcome))


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
            for name, low, high in SCALING_RANGES
            if has_field(request, name)
        )
    )
    if problems:
        raise ValidationFailed(problems)


def _update_values(request: registry_pb2.UpdateChuteRequest, *, public: bool) -> dict[str, Any]:
    """The columns an update writes: non-blank texts, a logo, the scaling knobs (private chutes
    only: public ones are scaled by the platform) and `disabled`."""
    values: dict[str, Any] = {"updated_at": sa.func.now()}
    for text_field in ("tagline", "readme", "tool_description"):
        if has_field(request, text_field) and getattr(request, text_field).strip():
            values[text_field] = getattr(request, text_field)
    if request.HasField("logo_id") and request.logo_id:
        values["logo_id"] = request.logo_id
    if not public:
        for knob in ("max_instances", "scaling_threshold", "shutdown_after_seconds"):
            if has_field(request, knob):
                values[knob] = getattr(request, knob)
    if request.HasField("disabled"):
        values["disabled"] = request.disabled
    return values


#: The real API's warmup stream lasts at most 600 s and reports about every 5 s.
WARMUP_SECONDS = 600.0
WARMUP_FRAME_SECONDS = 5.0
WARMUP_POLL_SECONDS = 0.05
ROUTED_WAIT_SECONDS = 1.0


def _sse(event: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(
        content_type="text/event-stream", data=f"data: {json.dumps(event)}\n\n".encode()
    )


def _json_body(value: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(value).encode())


async def _run_beside(servicer: object, settings: Settings) -> list[Closable]:
    """Load every chute's route before Envoy is answered, then follow the tables; decide and
    place instances; check who may call which chute host."""
    assert isinstance(servicer, RegistryServicer)
    follower = RouteFollower(servicer.db, servicer.routing)
    await follower.start()
    reads = ReadFollower(servicer.db, servicer.reads)
    await reads.start()
    servicer.scheduler.start()
    servicer.utilization.start()
    return [
        follower,
        reads,
        servicer.scheduler,
        servicer.utilization,
        *await anonymous_reads.serve_checks_and_reads(servicer, settings),
    ]


SPEC = ServiceSpec(
    name="registry",
    grpc_services=(
        GrpcService.of(registry_pb2, registry_pb2_grpc, "RegistryService"),
        # Envoy's discovery service: internal (the gateway routes only chutes.* packages).
        GrpcService.of(miners_pb2, miners_pb2_grpc, "MinerService").serving(lambda s: s.miners),
        # For the suite's services only (the gateway never routes *InternalService).
        GrpcService.of(internal_pb2, internal_pb2_grpc, "RegistryInternalService").serving(
            lambda s: s.job_placements
        ),
        # Envoy's discovery and access-log services: internal (the gateway routes only chutes.*).
        GrpcService(xds.ADS_SERVICE, lambda servicer, server: ads.add_to_server(servicer.ads, server)),
        GrpcService(
            "envoy.service.accesslog.v3.AccessLogService",
            lambda servicer, server: als_pb2_grpc.add_AccessLogServiceServicer_to_server(
                servicer.activity, server
            ),
        ),
    ),
    make_servicer=RegistryServicer,
    start_side_servers=_run_beside,
)
