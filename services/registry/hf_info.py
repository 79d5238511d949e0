"""Which Hugging Face model a chute serves (spec/chutes-api.md 4.13, GET /chutes/{id}/hf_info),
read from its code, so that miners can download the weights before launching it.

The model is the string literal `model_name=` of a `build_vllm_chute` / `build_sglang_chute` call,
preferring a top-level `chute = builder(...)`; the revision is the chute's own. The real API
asks Hugging Face for the main branch's commit when the chute pins none; this suite does not
reach Hugging Face, so the revision is then null. Answers are kept 300 s per chute (the code
changes only on a redeploy); "no model" is not kept, as the real API does not cache it.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass

BUILDERS = frozenset({"build_vllm_chute", "build_sglang_chute"})
CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class HfInfo:
    repo_id: str
    revision: str | None


def _builder_call(node: ast.AST | None) -> ast.Call | None:
    if not isinstance(node, ast.Call):
        return None
    function = node.func
    name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)
    return node if name in BUILDERS else None


def _model_name(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "model_name" and isinstance(keyword.value, ast.Constant):
            value = keyword.value.value
            return value if isinstance(value, str) and value else None
    return None


def model_of(code: str) -> str | None:
    """The model the code builds its chute for, or None."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "chute" for t in statement.targets
        ):
            call = _builder_call(statement.value)
            if call is not None and (model := _model_name(call)):
                return model
    for node in ast.walk(tree):
        call = _builder_call(node)
        if call is not None and (model := _model_name(call)):
            return model
    return None


class HfInfoCache:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, HfInfo]] = {}

    def get(self, chute_id: str) -> HfInfo | None:
        hit = self._items.get(chute_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, chute_id: str, info: HfInfo) -> None:
        if len(self._items) > 10_000:
            self._items.clear()
        self._items[chute_id] = (time.monotonic() + CACHE_SECONDS, info)


def hf_info(code: str, revision: str | None) -> HfInfo | None:
    model = model_of(code)
    return None if model is None else HfInfo(model, revision or None)
