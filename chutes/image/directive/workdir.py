"""WORKDIR <workdir>."""

from __future__ import annotations

from chutes.image.directive import BaseDirective, DirectiveType


class WORKDIR(BaseDirective):
    """The working directory of later directives and of the container."""

    def __init__(self, workdir: str) -> None:
        super().__init__(DirectiveType.WORKDIR, workdir)
