"""Dockerfile directives of the image builder, rendered exactly as the real SDK renders them.

Each directive is `"<TYPE> <args>"`; the constructors below validate their arguments with the
real SDK's rules. The real SDK validates with `assert`; `InvalidDirective` is both a ValueError
and an AssertionError, so the check survives `python -O` and code catching either keeps working.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Final


class InvalidDirective(ValueError, AssertionError):
    """An argument the Dockerfile directive would reject (or that the platform forbids)."""


class DirectiveType(Enum):
    """The Dockerfile instructions the builder produces."""

    FROM = "FROM"
    ADD = "ADD"
    ENTRYPOINT = "ENTRYPOINT"
    ENV = "ENV"
    MAINTAINER = "MAINTAINER"
    RUN = "RUN"
    USER = "USER"
    WORKDIR = "WORKDIR"


@dataclass
class Directive:
    """One Dockerfile line; `build_context` lists the local files an ADD needs in the upload."""

    type: DirectiveType
    args: str
    build_context: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.type.value} {self.args}"


# A docker reference: [registry[:port]/]path[/path...][:tag][@sha256:digest].
IMAGE_RE: Final = re.compile(
    r"^((([a-z0-9.-]+)(:[0-9]+)?/)?[a-z0-9._-]+(/[a-z0-9._-]+)*)(:[\w.-]+)?(@sha256:[a-f0-9]{64})?$", re.I
)
ENV_KEY_RE: Final = re.compile(r"^([a-z_][a-z0-9_]*)$", re.I)
APT_PACKAGE_RE: Final = re.compile(r"^[a-zA-Z0-9_:\*-]+$")
CHECKSUM_RE: Final = re.compile(r"^sha(?:256|384|512):[a-f0-9]+$")
CHOWN_RE: Final = re.compile(r"^([a-z_][a-z0-9_-]{0,31}|\d+)(:([a-z_][a-z0-9_-]{0,31}|\d+))?$", re.I)
CHMOD_RE: Final = re.compile(r"^[0-7]{3}$")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidDirective(message)


def from_(image: str) -> Directive:
    """FROM <image>."""
    _check(bool(IMAGE_RE.match(image)), f"Invalid image: {image}")
    return Directive(DirectiveType.FROM, image)


def run(command: str) -> Directive:
    """RUN <command> (not validated: it is a shell command line)."""
    return Directive(DirectiveType.RUN, command)


def env(key: str, value: str) -> Directive:
    """ENV key=value."""
    _check(bool(ENV_KEY_RE.match(key)), f"Invalid variable name: {key}")
    return Directive(DirectiveType.ENV, f"{key}={value}")


def workdir(directory: str) -> Directive:
    """WORKDIR <directory>."""
    return Directive(DirectiveType.WORKDIR, directory)


def user(name: str) -> Directive:
    """USER <name>."""
    return Directive(DirectiveType.USER, name)


def maintainer(name: str) -> Directive:
    """MAINTAINER <name>."""
    return Directive(DirectiveType.MAINTAINER, name)


def entrypoint(command: list[str]) -> Directive:
    """ENTRYPOINT in exec (JSON array) form."""
    return Directive(DirectiveType.ENTRYPOINT, json.dumps(command))


def apt_update() -> Directive:
    """RUN apt-get update."""
    return run("apt-get update")


def apt(command: str, packages: str | list[str]) -> Directive:
    """RUN apt-get -y <install|remove> <packages...>."""
    names = [packages] if isinstance(packages, str) else list(packages)
    for name in names:
        _check(bool(APT_PACKAGE_RE.match(name)), f"Invalid apt package option: {name}")
    return run(f"apt-get -y {command} " + " ".join(names))


def add(
    source: str,
    dest: str,
    keep_git_dir: bool = False,
    checksum: str | None = None,
    chown: str | None = None,
    chmod: str | None = None,
    exclude: list[str] | None = None,
    build_dir: str | None = None,
) -> Directive:
    """ADD [options] <source> <dest>.

    URL sources (anything with `://`) may use `--keep-git-dir` and `--checksum`. Local sources are
    glob patterns (recursive), minus the `exclude` globs, limited to paths under `build_dir` (the
    working directory by default); the matches become the directive's build context, since only
    those files are uploaded for a remote build. No match is an error.
    """
    is_url = "://" in source
    options: list[str] = []
    if is_url:
        if keep_git_dir:
            options.append("--keep-git-dir=true")
        if checksum:
            _check(bool(CHECKSUM_RE.match(checksum)), f"Invalid checksum option: {checksum}")
            options.append(f"--checksum={checksum}")
    if chown:
        _check(bool(CHOWN_RE.match(chown)), f"Invalid chown option: {chown}")
        options.append(f"--chown={chown}")
    if chmod:
        _check(bool(CHMOD_RE.match(chmod)), f"Invalid chmod option: {chmod}")
        options.append(f"--chmod={chmod}")

    context: list[str] = []
    if not is_url:
        matches = glob.glob(source, recursive=True)
        excluded = {path for pattern in exclude or [] for path in glob.glob(pattern, recursive=True)}
        root = os.path.abspath(build_dir or os.getcwd())
        context = [
            path
            for path in matches
            if path not in excluded and os.path.commonpath([root, os.path.abspath(path)]) == root
        ]
        _check(bool(context), f"No (accessible) source paths matched provided pattern: {source}")
    return Directive(DirectiveType.ADD, " ".join([*options, source, dest]), context)
