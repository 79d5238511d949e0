"""FROM <image>."""

from __future__ import annotations

import re
from typing import Final

from chutes.image.directive import BaseDirective, DirectiveType, check

# A docker reference: [registry[:port]/]path[/path...][:tag][@sha256:digest].
IMAGE_RE: Final = re.compile(
    r"^((([a-z0-9.-]+)(:[0-9]+)?/)?[a-z0-9._-]+(/[a-z0-9._-]+)*)(:[\w.-]+)?(@sha256:[a-f0-9]{64})?$", re.I
)


class FROM(BaseDirective):
    """The base image: must be a docker reference."""

    def __init__(self, image: str) -> None:
        check(bool(IMAGE_RE.match(image)), f"Invalid image: {image}")
        super().__init__(DirectiveType.FROM, image)
