"""`chutes build`: build a chute's image where this machine can, else hand over its Dockerfile.

The published CLI uploads the build context to the platform, which builds and pushes the image.
A local suite has no image builder: its images are registered by an operator
(`chutes-suite admin add-image`). So `chutes build` writes the Dockerfile and the files its ADD
directives need into a build directory, builds it with Docker or Podman when one is installed,
and otherwise says what to run where one is; either way it ends with the command that registers
the image with the suite, under the id the SDK derives (`Image.uid`), so chutes using it deploy.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from chutes.cli.api import CommandError

BUILDERS = ("docker", "podman")

# Never copied into a build context with --include-cwd.
_IGNORED = shutil.ignore_patterns(".git", "__pycache__", ".venv", "*.pyc")


def image_of(found: Any, ref: str) -> Any:
    """The `Image` a reference names: the variable itself, or the image of a chute/ChutePack."""
    from chutes.chute import Chute
    from chutes.image import Image

    if isinstance(found, Image):
        return found
    chute = found if isinstance(found, Chute) else getattr(found, "chute", None)
    if isinstance(chute, Chute):
        if isinstance(chute.image, Image):
            return chute.image
        raise CommandError(
            f"{ref}: the chute uses the image reference {chute.image!r}, which is built elsewhere; "
            "nothing to build here"
        )
    raise CommandError(f"{ref} is a {type(found).__name__}, not an Image, Chute or ChutePack")


def write_context(image: Any, directory: Path, include_cwd: bool) -> Path:
    """The Dockerfile plus the files its ADD directives name (relative to the working directory,
    where the chute file's paths are), or the whole working directory with `include_cwd`."""
    directory.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    if include_cwd:
        shutil.copytree(cwd, directory, ignore=_IGNORED, dirs_exist_ok=True)
    for source in image.build_context:
        path = Path(source)
        target = directory / (path.resolve().relative_to(cwd) if path.is_absolute() else path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target, ignore=_IGNORED, dirs_exist_ok=True)
        else:
            shutil.copy2(path, target)
    dockerfile = directory / "Dockerfile"
    dockerfile.write_text(str(image) + "\n", encoding="utf-8")
    return dockerfile


def register_hint(image: Any, public: bool) -> str:
    command = (
        f"chutes-suite admin add-image --username {image.username} --name {image.name} --tag {image.tag}"
    )
    return command + (" --public" if public else "")


def cmd_build(args: argparse.Namespace) -> int:
    if args.config_path:
        os.environ["CHUTES_CONFIG_PATH"] = args.config_path
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    from chutes.runner import load_variable

    found, _, _, _ = load_variable(args.chute)
    image = image_of(found, args.chute)
    # Docker refuses upper case in repository names (the tag may keep it).
    tag = f"{image.username}/{image.name}".lower() + f":{image.tag}"
    builder = args.builder or next((tool for tool in BUILDERS if shutil.which(tool)), None)
    if builder is not None and shutil.which(builder) is None:
        raise CommandError(f"--builder {builder}: not found on PATH")
    if args.output:
        directory = Path(args.output).resolve()
    elif builder is not None:
        directory = Path(tempfile.mkdtemp(prefix="chutes-build-"))
    else:
        directory = Path.cwd() / f"chutes-build-{image.name}-{image.tag}"
    dockerfile = write_context(image, directory, args.include_cwd)
    if args.logo:
        print(f"--logo {args.logo}: not used (a local suite keeps no image logos)")
    hint = register_hint(image, args.public)
    if builder is None:
        print(
            f"No docker or podman here. The Dockerfile and build context are in {directory}:\n"
            f"  docker build --platform=linux/amd64 -t {tag} -f {dockerfile} {directory}\n"
            f"Then register the image with the suite (image id {image.uid}):\n  {hint}"
        )
        return 0
    command = [builder, "build", "--platform=linux/amd64", "-t", tag, "-f", str(dockerfile), str(directory)]
    print("+ " + " ".join(command), flush=True)
    try:
        done = subprocess.run(command, check=False)
    finally:
        if not args.output:
            shutil.rmtree(directory, ignore_errors=True)
    if done.returncode != 0:
        raise CommandError(f"{builder} build failed (exit {done.returncode})")
    print(f"Built {tag}. Register it with the suite (image id {image.uid}):\n  {hint}")
    return 0
