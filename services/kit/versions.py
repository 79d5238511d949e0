"""SDK version strings as the real API compares them (deploy's SDK gate, TEE evidence's floor)."""

from __future__ import annotations

import re


def version_tuple(version: str | None) -> tuple[int, ...]:
    """`0.6.9` as (0, 6, 9); each part's leading digits count (`0.6.0rc1` is (0, 6, 0)); anything
    unparsable sorts first."""
    parts = []
    for piece in (version or "").split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)
