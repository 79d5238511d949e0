"""RUN <command>."""

from __future__ import annotations

from chutes.image.directive import BaseDirective, DirectiveType


class RUN(BaseDirective):
    """A shell command line, not validated."""

    def __init__(self, command: str) -> None:
        super().__init__(DirectiveType.RUN, command)
