"""`chutes images list/get/delete` against a running suite, and an image added without
--chutes-version deploys (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RunningSuite
from tests.test_chutes_cli import Cli, new_account
from tests.test_identity import admin


def test_images_list_get_delete(suite: RunningSuite, tmp_path: Path) -> None:
    owner = new_account(suite, "img")  # registers cli-base:1.0 for the account
    cli = Cli(suite.gateway, owner, tmp_path)

    listed = cli.ok("images", "list")
    assert "Found 1 matching images, displaying 1" in listed
    assert "cli-base" in listed and "built and pushed" in listed

    image = json.loads(cli.ok("images", "get", "cli-base:1.0"))
    assert (image["name"], image["tag"], image["chutes_version"]) == ("cli-base", "1.0", "0.6.9")

    out = cli.ok("images", "delete", image["image_id"], "--yes")
    assert f"Successfully deleted image {image['image_id']}" in out
    assert "Found 0 matching images" in cli.ok("images", "list")
    assert "not found" in cli.fails("images", "get", "cli-base:1.0").lower()


def test_image_added_without_a_version_takes_deploys(suite: RunningSuite, tmp_path: Path) -> None:
    owner = new_account(suite, "nover", image=False)
    admin(suite, "add-image", "--username", owner.username, "--name", "cli-base", "--tag", "1.0")
    cli = Cli(suite.gateway, owner, tmp_path)
    assert json.loads(cli.ok("images", "get", "cli-base:1.0"))["chutes_version"] == "0.6.9"
    image = f"{owner.username}/cli-base:1.0"
    chute_file = tmp_path / "tiny.py"
    chute_file.write_text(
        "from chutes.chute import Chute, NodeSelector\n"
        f"chute = Chute(username={owner.username!r}, name='tiny', image={image!r},\n"
        "               node_selector=NodeSelector(gpu_count=1))\n\n"
        "@chute.cord(public_api_path='/echo')\n"
        "async def echo(self, text: str) -> str:\n"
        "    return text\n"
    )
    out = cli.ok("deploy", "tiny:chute", "--accept-fee", "--yes", cwd=tmp_path)
    assert "Successfully deployed chute tiny" in out
