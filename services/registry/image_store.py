"""Every query about images: registered references to container images (this suite builds none).
(store.py holds the queries about chutes; fleet_store.py about nodes and instances.)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit.caller import Caller
from services.kit.errors import AlreadyExists, InvalidArgument
from services.registry.models import chutes, images

#: `[username/]name:tag` as the real API parses image references.
IMAGE_REF = re.compile(
    r"^(?:([a-z0-9][a-z0-9_.-]*)/)?([a-z0-9][a-z0-9_.-]*):([a-z0-9][a-z0-9_.-]*)$", re.IGNORECASE
)
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$", re.IGNORECASE)


def image_id_of(username: str, name: str, tag: str) -> str:
    """The SDK's `Image.uid`: uuid5(NAMESPACE_OID, "username/name:tag" lower-cased), so a chute file
    that passes an `Image` object and one that passes `"username/name:tag"` both find it."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{username}/{name}:{tag}".lower()))


def _visible_images(caller: Caller | None) -> sa.ColumnElement[bool]:
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
    query = sa.select(images).where(wanted, _visible_images(caller))
    return (await connection.execute(query)).mappings().first()


async def list_images(
    connection: AsyncConnection,
    caller: Caller | None,
    *,
    include_public: bool,
    name: str | None,
    tag: str | None,
    limit: int,
    offset: int,
) -> tuple[int, Sequence[RowMapping]]:
    visible = (
        _visible_images(caller)
        if (caller is None or include_public)
        else (images.c.user_id == caller.user_id)
    )
    where = [visible]
    if name is not None:
        where.append(images.c.name.ilike(f"%{name}%"))
    if tag is not None:
        where.append(images.c.tag.ilike(f"%{tag}%"))
    total = await connection.execute(sa.select(sa.func.count()).select_from(images).where(*where))
    page = (
        sa.select(images)
        .where(*where)
        .order_by(images.c.created_at.desc(), images.c.image_id)
        .limit(limit)
        .offset(offset)
    )
    rows = (await connection.execute(page)).mappings().all()
    return total.scalar_one(), rows


async def delete_image(connection: AsyncConnection, image_id: str, owner_id: str) -> bool:
    """Delete an image of `owner_id`; False if there is none. 409 while chutes use it."""
    used = (
        await connection.execute(
            sa.select(sa.func.count()).select_from(chutes).where(chutes.c.image_id == image_id)
        )
    ).scalar_one()
    owned = images.c.user_id == owner_id
    wanted = images.c.image_id == image_id
    if (await connection.execute(sa.select(images.c.image_id).where(wanted, owned))).first() is None:
        return False
    if used:
        raise AlreadyExists(f"Image is used by {used} chute(s); delete them first")
    await connection.execute(images.delete().where(wanted, owned))
    return True


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
    """Register an image reference (the operator command; the suite builds no images, so a
    registered image is "built and pushed"). 409 if that image already exists."""
    for label, value in (("name", name), ("tag", tag)):
        if not _IMAGE_NAME.match(value):
            raise InvalidArgument(f"Image {label} {value!r} must match [a-z0-9][a-z0-9_.-]*")
    image_id = image_id_of(username, name, tag)
    statement = (
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
    inserted = (await connection.execute(statement)).mappings().first()
    if inserted is None:
        raise AlreadyExists(f"Image {username}/{name}:{tag} already exists ({image_id})")
    return inserted
