"""MAINTAINER <maintainer>."""

from __future__ import annotations

from chutes.image.directive import BaseDirective, DirectiveType


class MAINTAINER(BaseDirective):
    """Who maintains the image (informational)."""

    def __init__(self, maintainer: str) -> None:
        super().__init__(DirectiveType.MAINTAINER, maintainer)
