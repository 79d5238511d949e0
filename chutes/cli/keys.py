"""`chutes keys create/list/get/delete`: API keys, admin or scoped to images and chutes."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import urlencode

from chutes.cli.api import Api, CommandError, ok_json, path_part
from chutes.cli.output import confirm, print_json, table
from chutes.config import load_config


def key_body(args: argparse.Namespace) -> dict[str, Any]:
    """`POST /api_keys/` bodies as the real CLI builds them (name, admin, scopes), minus its bug
    of sending the `--images`/`--chutes` scope twice."""
    body: dict[str, Any] = {"name": args.name, "admin": bool(args.admin)}
    if args.json_input:
        try:
            extra = json.loads(args.json_input)
        except json.JSONDecodeError as error:
            raise CommandError(f"--json-input is not JSON: {error}") from None
        if not isinstance(extra, dict) or not isinstance(extra.get("scopes"), list):
            raise CommandError('--json-input must be {"scopes": [...]}')
        body["scopes"] = extra["scopes"]
        return body
    scopes: list[dict[str, str]] = []
    for object_type, everything, ids in (
        ("images", args.images, args.image_ids),
        ("chutes", args.chutes, args.chute_ids),
    ):
        if everything:
            scopes.append({"object_type": object_type})
        scopes += [{"object_type": object_type, "object_id": object_id} for object_id in ids or []]
    if scopes:
        if args.admin:
            raise CommandError("--admin keys have no scopes")
        if not args.action:
            raise CommandError("scoped keys need --action (read, write, delete or invoke)")
        body["scopes"] = [{**scope, "action": args.action} for scope in scopes]
    return body


def cmd_keys_create(args: argparse.Namespace) -> int:
    body = key_body(args)
    with Api(load_config()) as api:
        data = ok_json(api.post("/api_keys/", body))
    print_json(data)
    print(f'To use the key, add "Authorization: Basic {data["secret_key"]}" to your headers!')
    print(f"(or: export CHUTES_API_KEY={data['secret_key']})")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    query = urlencode([("limit", str(args.limit)), ("page", str(args.page))])
    with Api(load_config()) as api:
        data = ok_json(api.get(f"/api_keys/?{query}", purpose="api_keys"))
    items = data.get("items", []) if isinstance(data, dict) else data
    if isinstance(data, dict) and "total" in data:
        print(f"Found {data['total']} matching keys, displaying {len(items)}")
    rows = [
        [
            str(item.get("api_key_id")),
            str(item.get("name")),
            "true" if item.get("admin") else "false",
            "\n".join(json.dumps(scope) for scope in item.get("scopes") or []) or "-",
        ]
        for item in items
    ]
    if rows:
        print(table(["api_key_id", "name", "admin", "scopes"], rows))
    return 0


def cmd_keys_get(args: argparse.Namespace) -> int:
    with Api(load_config()) as api:
        print_json(ok_json(api.get(f"/api_keys/{path_part(args.key_id)}", purpose="api_keys")))
    return 0


def cmd_keys_delete(args: argparse.Namespace) -> int:
    if not confirm(f"Are you sure you want to delete api_keys/{args.key_id}?", args.yes):
        return 1
    with Api(load_config()) as api:
        data = ok_json(api.delete(f"/api_keys/{path_part(args.key_id)}", purpose="api_keys"))
    print(f"Successfully deleted api_key {data.get('api_key_id', args.key_id)}")
    return 0
