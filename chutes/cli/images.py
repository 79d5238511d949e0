"""`chutes images list/get/delete`: the images the caller can deploy chutes on (as published)."""

from __future__ import annotations

import argparse
from urllib.parse import urlencode

from chutes.cli.api import Api, ok_json, path_part
from chutes.cli.output import confirm, print_json, table
from chutes.config import load_config


def cmd_images_list(args: argparse.Namespace) -> int:
    query: list[tuple[str, str]] = [("include_public", str(bool(args.include_public)))]  # True/False
    if args.name:
        query.append(("name", args.name))
    query += [("limit", str(args.limit)), ("page", str(args.page))]
    with Api(load_config()) as api:
        data = ok_json(api.get(f"/images/?{urlencode(query)}", purpose="images"))
    items = data.get("items") or []
    print(f"Found {data.get('total', 0)} matching images, displaying {len(items)}")
    if items:
        columns = ("image_id", "name", "tag", "status", "created_at")
        rows = [[str(item.get(key)) for key in columns] for item in items]
        print(table(["ID", "Name", "Tag", "Status", "Created"], rows))
    return 0


def cmd_images_get(args: argparse.Namespace) -> int:
    with Api(load_config()) as api:
        print_json(ok_json(api.get(f"/images/{path_part(args.image)}", purpose="images")))
    return 0


def cmd_images_delete(args: argparse.Namespace) -> int:
    if not confirm(f"Are you sure you want to delete images/{args.image}?", args.yes):
        return 1
    with Api(load_config()) as api:
        data = ok_json(api.delete(f"/images/{path_part(args.image)}", purpose="images"))
    print(f"Successfully deleted image {data.get('image_id', args.image)}")
    return 0
