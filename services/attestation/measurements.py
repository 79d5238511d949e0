"""The operator's measurement allow-list, one format for every trust root.

An allow-list is a list of rules; a rule maps measurement names to lowercase hex values. Evidence
passes when at least one rule matches, and a rule matches when every name it lists has that value
(names it omits may be anything: RTMR3, for one, is extended at run time and is often left out).
TDX names: `mrtd`, `rtmr0`, `rtmr1`, `rtmr2`, `rtmr3`; software names: `code`, `runtime`.

As a setting it is JSON, e.g. `[{"mrtd": "91eb...", "rtmr0": "44c0..."}]`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TypeAlias

AllowList: TypeAlias = tuple[Mapping[str, str], ...]


def parse_allow_list(text: str) -> AllowList:
    """An allow-list from its JSON form; ValueError naming what is wrong."""
    data = json.loads(text) if text.strip() else []
    if not isinstance(data, list):
        raise ValueError("a measurement allow-list is a JSON list of objects")
    rules: list[Mapping[str, str]] = []
    for index, rule in enumerate(data):
        if not isinstance(rule, dict) or not rule:
            raise ValueError(f"allow-list rule {index} must be a non-empty object")
        normalized: dict[str, str] = {}
        for name, value in rule.items():
            if not isinstance(value, str):
                raise ValueError(f"allow-list rule {index}: {name} must be a hex string")
            bytes.fromhex(value)  # ValueError for anything that is not hex
            normalized[name.lower()] = value.lower()
        rules.append(normalized)
    return tuple(rules)


def allowed(measurements: Mapping[str, str], allow_list: Sequence[Mapping[str, str]]) -> bool:
    """Whether some rule of `allow_list` matches `measurements` (an empty list allows nothing)."""
    return any(all(measurements.get(name) == value for name, value in rule.items()) for rule in allow_list)
