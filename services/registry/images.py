"""Images: registered references to container images (this suite builds none).

An image's id is derived the way the SDK derives `Image.uid`: uuid5(NAMESPACE_OID,
"username/name:tag" lower-cased), so a chute file that passes an `Image` object and one that
passes the string `"username/name:tag"` both find it. A registered image is "built and pushed".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from chutes.registry.v1 import registry_pb2
from services.kit.auth import Caller
from services.kit.errors import AlreadyExists, InvalidArgument
from services.kit.messages import timestamp
from services.registry.tables import images

#: `[username/]name:tag` as the real API parses image references.
IMAGE_REF = re.compile(
    r"^(?:([a-z0-9][a-z0-9_.-]*)/)?([a-z0-9][a-z0-9_.-]*):([a-z0-9][a-z0-9_.-]*)$", re.IGNORECASE
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$", re.IGNORECASE)
LOGO_CDN = "https://logos.chutes.ai/logos"


def image_id_of(username: str, name: str, tag: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{username}/{name}:{tag}".lower()))


def logo_url(logo_id: str | None) -> str:
    return f"{LOGO_CDN}/{logo_id}.webp" if logo_id else ""


def visible_clause(caller: Caller | None) -> sa.ColumnElement[bool]:
    """Images a caller may use or see: public ones and their own."""
    if caller is None:
        return images.c.public.is_(True)
    return sa.or_(images.c.public.is_(True), images.c.user_id == caller.user_id)


async def find_image(connection: AsyncConnection, reference: str, caller: Caller | None) -> RowMapping | None:
    """An image by `[username/]name:tag` (username defaults to the caller) or by id, if visible."""
    match = IMAGE_REF.match(reference)
    if match:
        username = match.group(1) or (caller.username if caller else "")
        wanted = images.c.image_id == image_id_of(username, match.group(2), match.group(3))
    else:
        wanted = images.c.image_id == reference
    row = (
        (await connection.execute(sa.select(images).where(wanted, visible_clause(caller)))).mappings().first()
    )
    return row


def image_message(row: Mapping[Any, Any], prefix: str = "") -> registry_pb2.Image:
    """The ImageResponse of a row (columns named `<prefix><column>` when joined with chutes)."""

    def col(name: str) -> Any:
        return row[prefix + name]

    return registry_pb2.Image(
        image_id=col("image_id"),
        user_id=col("user_id"),
        name=col("name"),
        tag=col("tag"),
        readme=col("readme"),
        public=col("public"),
        status=col("status"),
        created_at=timestamp(col("created_at")),
        build_started_at=timestamp(col("build_started_at")),
        build_completed_at=timestamp(col("build_completed_at")),
        user=registry_pb2.User(username=col("username"), user_id=col("user_id")),
        logo_id=col("logo_id") or "",
        patch_version=col("patch_version"),
        chutes_version=col("chutes_version") or "",
        logo=logo_url(col("logo_id")),
    )


async def add_image(
    connection: AsyncConnection,
    *,
    user_id: str,
    username: str,
    name: str,
    tag: str,
    public: bool,
    chutes_version: str | None,
    readme: str = "",
) -> RowMapping:
    """Register an image reference (the operator command). 409 if that image already exists."""
    for label, value in (("name", name), ("tag", tag)):
        if not _NAME.match(value):
            raise InvalidArgument(f"Image {label} {value!r} must match [a-z0-9][a-z0-9_.-]*")
    image_id = image_id_of(username, name, tag)
    inserted = (
        (
            await connection.execute(
                insert(images)
                .values(
                    image_id=image_id,
                    user_id=user_id,
                    username=username,
                    name=name,
                    tag=tag,
                    readme=readme,
                    public=public,
                    status="built and pushed",
                    chutes_version=chutes_version,
                    patch_version="initial",
                    build_started_at=sa.func.now(),
                    build_completed_at=sa.func.now(),
                )
                .on_conflict_do_nothing()
                .returning(*images.c)
            )
        )
        .mappings()
        .first()
    )
    if inserted is None:
        raise AlreadyExists(f"Image {username}/{name}:{tag} already exists ({image_id})")
    return inserted
