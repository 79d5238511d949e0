"""ENV key=value."""

from __future__ import annotations

import re
from typing import Final

from chutes.image.directive import BaseDirective, DirectiveType, check

ENV_KEY_RE: Final = re.compile(r"^([a-z_][a-z0-9_]*)$", re.I)


class ENV(BaseDirective):
    """An environment variable of the image (the name must be a shell identifier)."""

    def __init__(self, key: str, value: str) -> None:
        check(bool(ENV_KEY_RE.match(key)), f"Invalid variable name: {key}")
        super().__init__(DirectiveType.ENV, f"{key}={value}")
