"""USER <user>."""

from __future__ import annotations

from chutes.image.directive import BaseDirective, DirectiveType


class USER(BaseDirective):
    """The user later directives run as."""

    def __init__(self, user: str) -> None:
        super().__init__(DirectiveType.USER, user)
