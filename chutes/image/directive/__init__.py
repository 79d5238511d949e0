"""Dockerfile directives of the image builder, rendered exactly as the real SDK renders them.

Each directive is `"<TYPE> <args>"`. The classes live where the published SDK keeps them, since
chute files import them from there (`from chutes.image.directive.generic_run import RUN`):
`base_image.FROM`, `add.ADD`, `apt.APT`, `generic_run.RUN`, `env.ENV`, `user.USER`,
`workdir.WORKDIR`, `maintainer.MAINTAINER`, `entrypoint.ENTRYPOINT`, all `BaseDirective`s. The
lower-case functions below build the same objects for our own code.

Arguments are validated with the real SDK's rules. It validates with `assert`; `InvalidDirective`
is both a ValueError and an AssertionError, so the check survives `python -O` and code catching
either keeps working.
"""

from __future__ import annotations

from enum import Enum


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


class BaseDirective:
    """One Dockerfile line; `build_context` lists the local files an ADD needs in the upload.

    The underscored attributes are the published SDK's, which chute files and helpers read
    (`directive._args` of a WORKDIR, for instance); the properties are the same values."""

    def __init__(self, _type: DirectiveType, _args: str, build_context: list[str] | None = None) -> None:
        self._type = _type
        self._args = _args
        self._build_context: list[str] = list(build_context or [])

    @property
    def type(self) -> DirectiveType:
        return self._type

    @property
    def args(self) -> str:
        return self._args

    @property
    def build_context(self) -> list[str]:
        return self._build_context

    def __str__(self) -> str:
        return f"{self._type.value} {self._args}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseDirective):
            return NotImplemented
        return (self._type, self._args, self._build_context) == (
            other._type,
            other._args,
            other._build_context,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


# Our earlier name for the base class, kept for code that imported it.
Directive = BaseDirective


def check(ok: bool, message: str) -> None:
    """Raise InvalidDirective(message) unless `ok` (the published SDK's `assert`)."""
    if not ok:
        raise InvalidDirective(message)


# The classes import the names above from this package, so they are imported after them.
from chutes.image.directive.add import ADD  # noqa: E402
from chutes.image.directive.apt import APT  # noqa: E402
from chutes.image.directive.base_image import FROM  # noqa: E402
from chutes.image.directive.entrypoint import ENTRYPOINT  # noqa: E402
from chutes.image.directive.env import ENV  # noqa: E402
from chutes.image.directive.generic_run import RUN  # noqa: E402
from chutes.image.directive.maintainer import MAINTAINER  # noqa: E402
from chutes.image.directive.user import USER  # noqa: E402
from chutes.image.directive.workdir import WORKDIR  # noqa: E402

__all__ = [
    "ADD",
    "APT",
    "ENTRYPOINT",
    "ENV",
    "FROM",
    "MAINTAINER",
    "RUN",
    "USER",
    "WORKDIR",
    "BaseDirective",
    "Directive",
    "DirectiveType",
    "InvalidDirective",
    "add",
    "apt",
    "apt_update",
    "check",
    "entrypoint",
    "env",
    "from_",
    "maintainer",
    "run",
    "user",
    "workdir",
]


def from_(image: str) -> FROM:
    """FROM <image>."""
    return FROM(image)


def run(command: str) -> RUN:
    """RUN <command> (not validated: it is a shell command line)."""
    return RUN(command)


def env(key: str, value: str) -> ENV:
    """ENV key=value."""
    return ENV(key, value)


def workdir(directory: str) -> WORKDIR:
    """WORKDIR <directory>."""
    return WORKDIR(directory)


def user(name: str) -> USER:
    """USER <name>."""
    return USER(name)


def maintainer(name: str) -> MAINTAINER:
    """MAINTAINER <name>."""
    return MAINTAINER(name)


def entrypoint(command: str | list[str]) -> ENTRYPOINT:
    """ENTRYPOINT in exec (JSON array) form."""
    return ENTRYPOINT(command)


def apt_update() -> APT:
    """RUN apt-get update."""
    return APT.update()


def apt(command: str, packages: str | list[str]) -> APT:
    """RUN apt-get -y <install|remove> <packages...>."""
    return APT.install_or_remove(packages, command)


def add(
    source: str,
    dest: str,
    keep_git_dir: bool = False,
    checksum: str | None = None,
    chown: str | None = None,
    chmod: str | None = None,
    exclude: list[str] | None = None,
    build_dir: str | None = None,
) -> ADD:
    """ADD [options] <source> <dest> (see `ADD`)."""
    return ADD(source, dest, keep_git_dir, checksum, chown, chmod, exclude, build_dir)
