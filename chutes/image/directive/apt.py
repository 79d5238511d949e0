"""RUN apt-get update / apt-get -y install|remove <packages>."""

from __future__ import annotations

import re
from typing import Final

from chutes.image.directive import BaseDirective, DirectiveType, check

PACKAGE_RE: Final = re.compile(r"^[a-zA-Z0-9_:\*-]+$")


class APT(BaseDirective):
    """A RUN directive for apt; build it with `APT.update()`, `APT.install(...)`, `APT.remove(...)`."""

    def __init__(self, args: str = "apt-get update") -> None:
        super().__init__(DirectiveType.RUN, args)

    @classmethod
    def update(cls) -> APT:
        return cls("apt-get update")

    @classmethod
    def install_or_remove(cls, package: str | list[str], command: str = "install") -> APT:
        """`apt-get -y <command>` of one package or a list; each name is validated."""
        packages = [package] if isinstance(package, str) else list(package)
        for name in packages:
            check(bool(PACKAGE_RE.match(name)), f"Invalid apt package option: {name}")
        return cls(f"apt-get -y {command} " + " ".join(packages))

    # The published SDK's name for it.
    _install_or_remove = install_or_remove

    @classmethod
    def install(cls, package: str | list[str]) -> APT:
        return cls.install_or_remove(package, "install")

    @classmethod
    def remove(cls, package: str | list[str]) -> APT:
        return cls.install_or_remove(package, "remove")
