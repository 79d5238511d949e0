"""`chutes deploy`: check the chute's image, then `POST /chutes/` with the published CLI's body."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from chutes.cli.api import VERSION, Api, CommandError, detail_of, ok_json, path_part
from chutes.cli.output import confirm
from chutes.config import load_config

# Deploys run the API's whole pipeline; the real CLI sets no timeout at all for them.
DEPLOY_TIMEOUT: float | None = None


def deploy_body(loaded: Any, public: bool, logo_id: str | None = None) -> dict[str, Any]:
    """The deploy body, key for key in the published CLI's order (official-client-wire.md 3.1)."""
    chute = loaded.chute
    if chute.node_selector is None:
        # The real CLI crashes here (it calls .dict() on None); the API needs a selector anyway.
        raise CommandError(f"chute {chute.name} has no node_selector: add node_selector=NodeSelector(...)")
    if loaded.file is None:
        raise CommandError(f"{loaded.ref_str}: deploying needs the chute's source file")
    for job in chute.jobs:
        for port in job.ports:
            # The published CLI crashes serialising such a port; the platform needs both anyway.
            if port.name is None or port.proto is None:
                raise CommandError(f"job {job.name}: {port.incomplete_message()}")
    return {
        "name": chute.name,
        "tagline": chute.tagline,
        "readme": chute.readme,
        "logo_id": logo_id,
        "image": image_ref(chute),
        "public": public,
        "standard_template": chute.standard_template,
        "node_selector": chute.node_selector.dict(),
        "filename": loaded.file.name,
        "ref_str": loaded.ref_str,
        "code": loaded.file.read_text(encoding="utf-8"),
        "concurrency": chute.concurrency,
        "max_instances": chute.max_instances,
        "scaling_threshold": chute.scaling_threshold,
        "shutdown_after_seconds": chute.shutdown_after_seconds,
        "allow_external_egress": chute.allow_external_egress,
        "encrypted_fs": chute.encrypted_fs,
        "tee": chute.tee,
        "lock_modules": chute.lock_modules,
        "revision": chute.revision,
        "cords": [cord.to_dict() for cord in chute.cords],
        "jobs": [job.to_dict() for job in chute.jobs],
    }


def image_ref(chute: Any) -> str:
    """The image string verbatim, or an `Image` object's uid (uuid5 of `user/name:tag`, lower-cased)."""
    image = chute.image
    return image if isinstance(image, str) else str(image.uid)


def cmd_deploy(args: argparse.Namespace) -> int:
    from chutes.runner import load_chute

    if args.config_path:
        # Honoured here (the published option sets the variable after its config is read, so it
        # has no effect there): the file it names is the one used.
        os.environ["CHUTES_CONFIG_PATH"] = args.config_path
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    logo = Path(args.logo) if args.logo else None
    if logo is not None and not logo.is_file():
        raise CommandError(f"--logo {args.logo}: no such file")
    config = load_config()
    loaded = load_chute(args.chute)
    body = deploy_body(loaded, public=args.public)
    chute = loaded.chute
    with Api(config) as api:
        ref = body["image"]
        image = api.get(f"/images/{path_part(ref)}", purpose="images")
        ready = False
        if image.status_code == 200:
            try:
                info = image.json()
            except json.JSONDecodeError:
                info = {}
            ready = info.get("status") == "built and pushed" and (info.get("public") or not args.public)
        if not ready:
            why = detail_of(image) if image.status_code != 200 else "not built, or not public for --public"
            raise CommandError(f"Image '{ref}' is not available to be used (yet)! ({why})")
        if args.public:
            me = ok_json(api.get("/users/me", purpose="me"))
            allowed = int(me.get("permissions_bitmask") or 0) & (1 << 11) or (
                "Allow deploying models publicly." in (me.get("permissions") or [])
            )
            if not allowed:
                raise CommandError("You do not have permission to deploy public chutes.")
        if not confirm(f"You are about to upload {loaded.file} and deploy {chute.name}, confirm?", args.yes):
            print("Aborted.", file=sys.stderr)
            return 1
        if logo is not None:
            # Uploaded after the confirmation, as the published CLI does; its id goes in the body.
            body["logo_id"] = ok_json(api.post_file("/logos/", "logo", logo))["logo_id"]
        fee = "true" if args.accept_fee else "false"
        response = api.post(
            f"/chutes/?accept_fee={fee}",
            body,
            extra_headers={"X-Chutes-Version": VERSION},
            timeout=DEPLOY_TIMEOUT,
        )
        result = ok_json(response)
    print(
        f"Successfully deployed chute {chute.name} chute_id='{result['chute_id']}' "
        f"version={result['version']} invocations will be available soon!"
    )
    return 0
