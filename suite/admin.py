"""Operator commands: `chutes-suite admin create-user|create-key|add-image|create-token|set-job-quota`.

They write straight into the schemas of the suite's database: CHUTES_DATABASE_URL, or
the embedded database of a running `chutes-suite up` (its URL is in `<data dir>/database_url`).
Each prints one JSON object on stdout; the API key in it is shown only this once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from chutes._version import version as SDK_VERSION
from services.identity import keys, store
from services.identity.signatures import public_key_of
from services.kit.db import asyncpg_url
from services.kit.errors import DomainError
from services.kit.roles import Role
from services.kit.settings import Settings, get_settings

DATABASE_URL_FILE = "database_url"


class AdminError(Exception):
    """What went wrong, in words for the operator."""


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    recorded = settings.data_dir / DATABASE_URL_FILE
    if recorded.exists():
        return recorded.read_text().strip()
    raise AdminError("no database: start the suite (chutes-suite up) or set CHUTES_DATABASE_URL")


async def _in_schema(schema: str, work: Any) -> dict[str, Any]:
    """Run `work(connection)` in one transaction on a service's schema."""
    engine = create_async_engine(
        asyncpg_url(database_url(get_settings())),
        poolclass=NullPool,
        connect_args={"server_settings": {"search_path": schema}},
    )
    try:
        async with engine.begin() as connection:
            result: dict[str, Any] = await work(connection)
            return result
    except OSError as error:
        raise AdminError(f"cannot reach the database ({error}); is the suite running?") from None
    except DomainError as error:
        raise AdminError(error.detail) from None
    finally:
        await engine.dispose()


def create_user(args: argparse.Namespace) -> dict[str, Any]:
    bitmask = 0
    for name in args.role:
        bitmask |= Role.parse(name)
    for key in (args.hotkey, args.coldkey):
        if key is not None:
            try:
                public_key_of(key)
            except ValueError as error:
                raise AdminError(f"{key!r} is not an SS58 address: {error}") from None

    async def work(connection: Any) -> dict[str, Any]:
        user = await store.create_user(
            connection,
            args.username,
            hotkey=args.hotkey,
            coldkey=args.coldkey,
            permissions_bitmask=bitmask,
            netuids=args.netuid,
            balance=args.balance,
        )
        key, _ = await store.create_api_key(connection, user.user_id, "admin", admin=True)
        return {
            "user_id": user.user_id,
            "username": user.username,
            "api_key": key,
            "payment_address": user.payment_address,
        }

    return asyncio.run(_in_schema("identity", work))


LOCAL_MINER = "local-miner"


def local_miner_key(key_file: Path) -> str:
    """The API key of the suite's own miner (user `local-miner`, role miner): the one kept in
    `key_file` while it still exists in the database, else a new one (the user made if needed)."""
    kept = key_file.read_text().strip() if key_file.exists() else ""

    async def work(connection: Any) -> dict[str, Any]:
        parsed = keys.parse(kept)
        if parsed is not None and await store.key_for_authentication(connection, parsed) is not None:
            return {"api_key": kept}
        user: Any = await store.find_user(connection, LOCAL_MINER)
        user_id = (
            user.user_id
            if user
            else (await store.create_user(connection, LOCAL_MINER, permissions_bitmask=Role.MINER)).user_id
        )
        key, _ = await store.create_api_key(connection, user_id, f"miner-{uuid.uuid4().hex[:8]}", admin=True)
        return {"api_key": key}

    key: str = asyncio.run(_in_schema("identity", work))["api_key"]
    if key != kept:
        key_file.touch(mode=0o600)
        key_file.write_text(key)
    return key


def create_key(args: argparse.Namespace) -> dict[str, Any]:
    async def work(connection: Any) -> dict[str, Any]:
        user: Any = await store.find_user(connection, args.username)
        if user is None:
            raise AdminError(f"no user named {args.username!r}")
        name = args.name or f"key-{uuid.uuid4().hex[:8]}"
        key, row = await store.create_api_key(connection, user.user_id, name, admin=True)
        return {"api_key_id": row.api_key_id, "user_id": user.user_id, "name": name, "api_key": key}

    return asyncio.run(_in_schema("identity", work))


def add_image(args: argparse.Namespace) -> dict[str, Any]:
    """Register an image reference for chutes to deploy on (the suite builds no images)."""
    from services.registry.image_store import add_image as register

    async def owner(connection: Any) -> dict[str, Any]:
        user: Any = await store.find_user(connection, args.username)
        if user is None:
            raise AdminError(f"no user named {args.username!r}")
        return {"user_id": user.user_id, "username": user.username}

    found = asyncio.run(_in_schema("identity", owner))

    async def work(connection: Any) -> dict[str, Any]:
        row = await register(
            connection,
            user_id=found["user_id"],
            username=found["username"],
            name=args.name,
            tag=args.tag,
            public=args.public,
            chutes_version=args.chutes_version,
        )
        return {
            key: row[key] for key in ("image_id", "name", "tag", "public", "status", "chutes_version")
        } | {"username": found["username"]}

    return asyncio.run(_in_schema("registry", work))


def create_token(args: argparse.Namespace) -> dict[str, Any]:
    """A registration token, for suites run with CHUTES_OPEN_REGISTRATION=false."""

    async def work(connection: Any) -> dict[str, Any]:
        token = str(uuid.uuid4())
        await store.add_registration_token(connection, token)
        return {"token": token}

    return asyncio.run(_in_schema("identity", work))


#: `--chute-id` values that are not a chute: any chute without its own row, and the day's total.
ANY_CHUTE, ALL_JOBS = "*", "global"


def set_job_quota(args: argparse.Namespace) -> dict[str, Any]:
    """A user's daily job quota, for one chute, any chute ("*") or in total ("global")."""
    from services.jobs.store import set_quota

    if args.quota < 0:
        raise AdminError("--quota must be 0 (no jobs) or more")
    chute_id = args.chute_id
    if chute_id not in (ANY_CHUTE, ALL_JOBS):
        try:
            chute_id = str(uuid.UUID(chute_id))
        except ValueError:
            raise AdminError(f"--chute-id {chute_id!r} is not a chute UUID, '*' or 'global'") from None

    async def owner(connection: Any) -> dict[str, Any]:
        user: Any = await store.find_user(connection, args.username)
        if user is None:
            raise AdminError(f"no user named {args.username!r}")
        return {"user_id": user.user_id, "username": user.username}

    found = asyncio.run(_in_schema("identity", owner))

    async def work(connection: Any) -> dict[str, Any]:
        await set_quota(connection, found["user_id"], chute_id, args.quota)
        return found | {"chute_id": chute_id, "quota": args.quota}

    return asyncio.run(_in_schema("jobs", work))


def add_commands(commands: Any) -> None:
    admin = commands.add_parser("admin", help="operator commands on the suite's database")
    actions = admin.add_subparsers(dest="action", required=True)

    user = actions.add_parser("create-user", help="create a user with an admin API key")
    user.add_argument("--username", required=True)
    user.add_argument("--hotkey", help="SS58 address of the user's sr25519 hotkey")
    user.add_argument("--coldkey", help="SS58 address of the user's coldkey")
    user.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="ROLE",
        help="a role of spec 2.5, e.g. public_model_deployment (repeatable)",
    )
    user.add_argument(
        "--netuid", action="append", type=int, default=[], help="an administered subnet (repeatable)"
    )
    user.add_argument("--balance", type=float, default=0.0, help="starting balance, USD")
    user.set_defaults(admin_command=create_user)

    key = actions.add_parser("create-key", help="create a new admin API key for a user")
    key.add_argument("--username", required=True)
    key.add_argument("--name", help="the key's name (unique per user)")
    key.set_defaults(admin_command=create_key)

    image = actions.add_parser("add-image", help="register an image (username/name:tag) chutes can deploy on")
    image.add_argument("--username", required=True, help="the image's owner")
    image.add_argument("--name", required=True)
    image.add_argument("--tag", required=True)
    image.add_argument("--public", action="store_true", help="usable by every user")
    image.add_argument(
        "--chutes-version",
        # Without a version every deploy on the image is refused as "too old": default to the SDK
        # this suite ships, which is what an image built for it contains.
        default=SDK_VERSION,
        help=f"the chutes SDK version inside the image (deploys need >= 0.3.61; default {SDK_VERSION})",
    )
    image.set_defaults(admin_command=add_image)

    token = actions.add_parser("create-token", help="create a registration token")
    token.set_defaults(admin_command=create_token)

    quota = actions.add_parser("set-job-quota", help="set a user's daily job quota (jobs a day)")
    quota.add_argument("--username", required=True)
    quota.add_argument(
        "--chute-id",
        default=ANY_CHUTE,
        help="a chute's UUID; '*' (default): every chute without its own quota, and the total "
        "unless 'global' is set; 'global': the user's total a day",
    )
    quota.add_argument("--quota", required=True, type=int, help="jobs a day; 0 allows none")
    quota.set_defaults(admin_command=set_job_quota)
    admin.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        print(json.dumps(args.admin_command(args)))
    except (AdminError, ValueError) as error:
        print(f"chutes-suite admin: {error}", file=sys.stderr)
        return 1
    return 0
