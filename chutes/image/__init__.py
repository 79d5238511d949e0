"""`Image`: a chute's container image, described as a Dockerfile built step by step (spec 5).

    image = (
        Image(username="myuser", name="my-chute", tag="1.0")
        .from_base("parachutes/python:3.12")
        .run_command("pip install transformers torch")
    )
    str(image)  # the Dockerfile

Every builder method returns the image itself so calls chain. The identity of an image is
`uid = uuid5(NAMESPACE_OID, "<username>/<name>:<tag>".lower())`, which is what a chute sends as
its `image` at deploy when it was given an `Image` rather than an image reference string.
"""

from __future__ import annotations

import re
import uuid
import warnings
from typing import Final

from chutes.image import directive
from chutes.image.directive import (
    ADD,
    APT,
    ENTRYPOINT,
    ENV,
    FROM,
    MAINTAINER,
    RUN,
    USER,
    WORKDIR,
    BaseDirective,
    Directive,
    DirectiveType,
    InvalidDirective,
)
from chutes.util.context import is_remote

# The directive classes are importable from here as in the published SDK (`from chutes.image
# import RUN`), where they are the module's own imports.
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
    "Image",
    "InvalidDirective",
]

NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-_\.]*$", re.I)

# Build dependencies of CPython, installed by `with_python` before compiling it.
_PYTHON_BUILD_DEPS: Final = [
    "build-essential",
    "zlib1g-dev",
    "libncurses5-dev",
    "libgdbm-dev",
    "libnss3-dev",
    "libssl-dev",
    "libreadline-dev",
    "libffi-dev",
    "libsqlite3-dev",
    "wget",
    "libbz2-dev",
    "libexpat1-dev",
    "liblzma-dev",
]


class Image:
    """A Dockerfile under construction, plus the name, tag and readme it is pushed with."""

    default_base_image = "parachutes/python:3.12"

    def __init__(self, username: str, name: str, tag: str, readme: str = "") -> None:
        self.username = username
        self.name = name
        self.tag = tag
        self.readme = readme
        self._directives: list[Directive] = [directive.from_(self.default_base_image)]

    @property
    def uid(self) -> str:
        """uuid5(NAMESPACE_OID, "user/name:tag" lower-cased): computed from the current name and tag."""
        return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{self.username}/{self.name}:{self.tag}".lower()))

    @property
    def name(self) -> str:
        """The image name (letters, digits, `-`, `_`, `.`; starts with a letter or digit)."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        if not NAME_RE.match(name):
            raise ValueError(f"Invalid image name: '{name}'")
        self._name = name

    @property
    def tag(self) -> str:
        """The image tag (same rule as the name)."""
        return self._tag

    @tag.setter
    def tag(self, tag: str) -> None:
        if not NAME_RE.match(tag):
            raise ValueError(f"Invalid image tag: '{tag}'")
        self._tag = tag

    @property
    def directives(self) -> list[Directive]:
        """The Dockerfile lines so far (a copy)."""
        return list(self._directives)

    @property
    def build_context(self) -> list[str]:
        """Local paths the ADD directives need, in order and without repeats (the build upload)."""
        return list(dict.fromkeys(path for item in self._directives for path in item.build_context))

    def __str__(self) -> str:
        return "\n".join(str(item) for item in self._directives)

    def __repr__(self) -> str:
        return f"Image(username={self.username!r}, name={self.name!r}, tag={self.tag!r})"

    def _append(self, *items: Directive) -> Image:
        self._directives.extend(items)
        return self

    def from_base(self, base_image: str) -> Image:
        """Replace the FROM line (it stays first)."""
        base = directive.from_(base_image)
        self._directives = [base, *(d for d in self._directives if d.type is not DirectiveType.FROM)]
        return self

    def with_maintainer(self, maintainer: str) -> Image:
        """MAINTAINER <maintainer>."""
        return self._append(directive.maintainer(maintainer))

    def set_user(self, user: str) -> Image:
        """USER <user>."""
        return self._append(directive.user(user))

    def set_workdir(self, directory: str) -> Image:
        """WORKDIR <directory>."""
        return self._append(directive.workdir(directory))

    def run_command(self, command: str) -> Image:
        """RUN <command>."""
        return self._append(directive.run(command))

    def with_env(self, key: str, value: str) -> Image:
        """ENV key=value."""
        return self._append(directive.env(key, value))

    def apt_install(self, package: str | list[str]) -> Image:
        """RUN apt-get -y install <packages>."""
        return self._append(directive.apt("install", package))

    def apt_remove(self, package: str | list[str]) -> Image:
        """RUN apt-get -y remove <packages>."""
        return self._append(directive.apt("remove", package))

    def add(
        self,
        source: str,
        dest: str,
        keep_git_dir: bool = False,
        checksum: str | None = None,
        chown: str | None = None,
        chmod: str | None = None,
        exclude: list[str] | None = None,
        build_dir: str | None = None,
    ) -> Image:
        """ADD files or a URL to the image (see `directive.add`).

        Inside an instance the chute file is imported again, but the image is already built and
        the source files are not there: like the real SDK this is then a no-op.
        """
        if is_remote():
            return self
        return self._append(
            directive.add(source, dest, keep_git_dir, checksum, chown, chmod, exclude, build_dir)
        )

    def with_entrypoint(self, *args: str | list[str]) -> Image:
        """Set the ENTRYPOINT (exec form), replacing any earlier one. Takes the command as separate
        arguments or as one list. Without arguments it is `ENTRYPOINT []`, Docker's way of clearing
        the base image's entrypoint (the published SDK raises a TypeError there instead)."""
        command: list[str] = []
        for arg in args:
            command.extend([arg] if isinstance(arg, str) else arg)
        kept = [d for d in self._directives if d.type is not DirectiveType.ENTRYPOINT]
        self._directives = [*kept, directive.entrypoint(command)]
        return self

    def with_python(self, version: str = "3.10.15") -> Image:
        """Compile CPython `version` into /opt/python (with pip), then return to the current WORKDIR."""
        if re.fullmatch(r"\d+\.\d+", version):
            # The published SDK takes it (and the documentation's snippets use it), but python.org
            # has no Python-3.11.tgz, so the image build would fail at the wget: same Dockerfile,
            # plus the fix.
            warnings.warn(
                f"with_python({version!r}): python.org publishes full versions only, so the build "
                f"will not find Python-{version}.tgz; give one such as with_python('{version}.11')",
                stacklevel=2,
            )
        elif not re.fullmatch(r"\d+\.\d+\.\d+", version):
            raise InvalidDirective(f"Invalid python version: {version}")
        short = ".".join(version.split(".")[:2])
        workdirs = [d.args for d in self._directives if d.type is DirectiveType.WORKDIR]
        current_workdir = workdirs[-1] if workdirs else "/root"
        return self._append(
            directive.apt_update(),
            directive.apt("install", _PYTHON_BUILD_DEPS),
            directive.workdir("/usr/src"),
            directive.run(f"wget https://www.python.org/ftp/python/{version}/Python-{version}.tgz"),
            directive.run(f"tar -xzf Python-{version}.tgz"),
            directive.workdir(f"/usr/src/Python-{version}"),
            directive.run(
                "./configure --enable-optimizations --enable-shared --with-system-expat "
                "--with-ensurepip=install --prefix=/opt/python"
            ),
            directive.run("make -j"),
            directive.run("make altinstall"),
            directive.workdir(current_workdir),
            directive.run(f"ln -s /opt/python/bin/pip{short} /opt/python/bin/pip"),
            directive.run(f"ln -s /opt/python/bin/python{short} /opt/python/bin/python"),
            directive.run("echo /opt/python/lib >> /etc/ld.so.conf && ldconfig"),
            directive.run("rm -rf /usr/src/Python*"),
        )
