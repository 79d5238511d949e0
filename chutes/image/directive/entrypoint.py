"""ENTRYPOINT in exec (JSON array) form."""

from __future__ import annotations

import json

from chutes.image.directive import BaseDirective, DirectiveType


class ENTRYPOINT(BaseDirective):
    """The container's command: one string is a one-element command, a list is taken as is."""

    def __init__(self, args: str | list[str]) -> None:
        command = [args] if isinstance(args, str) else list(args)
        super().__init__(DirectiveType.ENTRYPOINT, json.dumps(command))
