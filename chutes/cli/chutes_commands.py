"""`chutes chutes list/get/delete` and `chutes share`: the caller's chutes and who may use them."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import urlencode

from chutes.cli.api import Api, ok_json, path_part
from chutes.cli.output import confirm, print_json, table
from chutes.config import load_config


def _cord_line(cord: dict[str, Any]) -> str:
    return (
        f"{cord.get('function')} / stream={cord.get('stream')} / "
        f"{cord.get('public_api_method')} {cord.get('public_api_path')}"
    )


def cmd_chutes_list(args: argparse.Namespace) -> int:
    query: list[tuple[str, str]] = [("include_public", str(bool(args.include_public)))]  # True/False
    if args.name:
        query.append(("name", args.name))
    query += [("limit", str(args.limit)), ("page", str(args.page))]
    with Api(load_config()) as api:
        data = ok_json(api.get(f"/chutes/?{urlencode(query)}", purpose="chutes"))
    items = data.get("items") or []
    print(f"Found {data.get('total', 0)} matching chutes, displaying {len(items)}")
    if items:
        refs = data.get("cord_refs") or {}
        rows = [
            [
                str(item.get("name")),
                str(item.get("chute_id")),
                "hot" if item.get("hot") else "cold",
                str(item.get("slug")),
                "\n".join(_cord_line(cord) for cord in refs.get(item.get("cord_ref_id"), []) or []),
            ]
            for item in items
        ]
        print(table(["name", "chute_id", "hot", "slug", "cords"], rows))
    return 0


def cmd_chutes_get(args: argparse.Namespace) -> int:
    with Api(load_config()) as api:
        print_json(ok_json(api.get(f"/chutes/{path_part(args.chute)}", purpose="chutes")))
    return 0


def cmd_chutes_delete(args: argparse.Namespace) -> int:
    if not confirm(f"Are you sure you want to delete chutes/{args.chute_id}?", args.yes):
        return 1
    with Api(load_config()) as api:
        data = ok_json(api.delete(f"/chutes/{path_part(args.chute_id)}", purpose="chutes"))
    print(f"Successfully deleted chute {data.get('chute_id', args.chute_id)}")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    path = "/chutes/unshare" if args.remove else "/chutes/share"
    body = {"chute_id_or_name": args.chute_id, "user_id_or_name": args.user_id}
    with Api(load_config()) as api:
        data = ok_json(api.post(path, body))
    print(data.get("status", json.dumps(data)) if isinstance(data, dict) else json.dumps(data))
    return 0
