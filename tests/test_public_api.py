"""The names chute authors import, pinned: each still imports from the path it always had and is
still the same kind of thing (spec chutes-sdk.md 1, 5, 9; the `chutes` console script).

The lists were read off the modules before chutes/cli.py became a package and the engine templates'
shared code moved into one module: a split or a move that drops or changes one of these names
fails here. The template modules are pinned whole (everything a chute file could import from
them); `chutes.chute.job` and `chutes.image` only for the names chute files use.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

CLASS = "class"
FUNCTION = "function"

# module -> name -> CLASS, FUNCTION, or the type of a constant.
PUBLIC: dict[str, dict[str, object]] = {
    "chutes.chute": {
        "Chute": CLASS,
        "ChutePack": CLASS,
        "Cord": CLASS,
        "CordFunction": CLASS,
        "DuplicatePath": CLASS,
        "InvalidPath": CLASS,
        "Job": CLASS,
        "NodeSelector": CLASS,
        "Port": CLASS,
    },
    "chutes.chute.job": {"Job": CLASS, "Port": CLASS},
    "chutes.image": {"Image": CLASS, "Directive": CLASS, "DirectiveType": CLASS, "InvalidDirective": CLASS},
    "chutes.chute.template": {},
    "chutes.chute.template.helpers": {
        "CACHE_DIR_VARIABLES": tuple,
        "DOWNLOAD_ATTEMPTS": int,
        "DOWNLOAD_RETRY_SECONDS": float,
        "ENGINE_HOST": str,
        "ENGINE_PORT": int,
        "ENGINE_URL": str,
        "count_flags": FUNCTION,
        "download_model": FUNCTION,
        "forbid_flags": FUNCTION,
        "get_models": FUNCTION,
        "gpu_count": FUNCTION,
        "has_flag": FUNCTION,
        "launch_engine": FUNCTION,
        "parse_stream_chunk": FUNCTION,
        "prompt_one": FUNCTION,
        "require_revision": FUNCTION,
        "set_default_cache_dirs": FUNCTION,
        "split_args": FUNCTION,
        "start_engine": FUNCTION,
        "validate_auth": FUNCTION,
        "wait_for_engine": FUNCTION,
        "warmup_model": FUNCTION,
    },
    "chutes.chute.template.vllm": {
        "BaseRequest": CLASS,
        "ChatCompletionLogProb": CLASS,
        "ChatCompletionLogProbs": CLASS,
        "ChatCompletionLogProbsContent": CLASS,
        "ChatCompletionRequest": CLASS,
        "ChatCompletionResponse": CLASS,
        "ChatCompletionResponseChoice": CLASS,
        "ChatCompletionResponseStreamChoice": CLASS,
        "ChatCompletionStreamResponse": CLASS,
        "ChatMessage": CLASS,
        "CompletionLogProbs": CLASS,
        "CompletionRequest": CLASS,
        "CompletionResponse": CLASS,
        "CompletionResponseChoice": CLASS,
        "CompletionResponseStreamChoice": CLASS,
        "CompletionStreamResponse": CLASS,
        "DefaultRole": CLASS,
        "DeltaMessage": CLASS,
        "DetokenizeRequest": CLASS,
        "DetokenizeResponse": CLASS,
        "FORBIDDEN_FLAGS": dict,
        "Logprob": CLASS,
        "MinifiedMessage": CLASS,
        "ResponseFormat": CLASS,
        "TokenizeRequest": CLASS,
        "TokenizeResponse": CLASS,
        "UsageInfo": CLASS,
        "VLLMChute": CLASS,
        "add_openai_cords": FUNCTION,
        "build_vllm_chute": FUNCTION,
        "check_engine_args": FUNCTION,
        "engine_env": FUNCTION,
        "minified_models": FUNCTION,
        "vllm_command": FUNCTION,
    },
    "chutes.chute.template.sglang": {
        "FORBIDDEN_FLAGS": dict,
        "SGLangChute": CLASS,
        "build_sglang_chute": FUNCTION,
        "sglang_command": FUNCTION,
    },
    "chutes.chute.template.embedding": {
        "EmbeddingChutePack": CLASS,
        "EmbeddingData": CLASS,
        "EmbeddingRequest": CLASS,
        "EmbeddingResponse": CLASS,
        "EmbeddingUsage": CLASS,
        "MinifiedEmbeddingRequest": CLASS,
        "build_embedding_chute": FUNCTION,
        "embedding_command": FUNCTION,
        "get_optimal_pooling_type": FUNCTION,
        "pooler_config": FUNCTION,
    },
    "chutes.chute.template.diffusion": {
        "CIVITAI_PREFIX": str,
        "DiffusionChute": CLASS,
        "GenerationInput": CLASS,
        "JPEG_QUALITY": int,
        "MinifiedGenerationInput": CLASS,
        "build_diffusion_chute": FUNCTION,
        "civitai_model_id": FUNCTION,
    },
    "chutes.cli": {"main": FUNCTION},
}

_SDK = ("chutes.chute.base", ("Chute", "ChutePack"))
_SELECTOR = ("chutes.chute.node_selector", ("NodeSelector",))
_IMAGE = ("chutes.image", ("Image",))
_HELPERS = "chutes.chute.template.helpers"

# Names a template module took from another module, and so offers as well (a chute file may import
# them from the template): module -> [(the module they come from, names)]; each must be the same
# object as there.
OFFERED_TOO: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "chutes.chute.template.vllm": [
        _SDK,
        _SELECTOR,
        _IMAGE,
        ("chutes.image.standard.vllm", ("VLLM",)),
        (
            _HELPERS,
            (
                "ENGINE_HOST",
                "ENGINE_PORT",
                "count_flags",
                "forbid_flags",
                "get_models",
                "gpu_count",
                "has_flag",
                "parse_stream_chunk",
                "require_revision",
                "split_args",
                "start_engine",
                "validate_auth",
                "warmup_model",
            ),
        ),
    ],
    "chutes.chute.template.sglang": [
        _SDK,
        _SELECTOR,
        _IMAGE,
        ("chutes.image.standard.sglang", ("SGLANG",)),
        ("chutes.chute.template.vllm", ("add_openai_cords", "engine_env")),
        (
            _HELPERS,
            (
                "ENGINE_HOST",
                "ENGINE_PORT",
                "ENGINE_URL",
                "forbid_flags",
                "gpu_count",
                "has_flag",
                "require_revision",
                "split_args",
                "start_engine",
                "validate_auth",
                "warmup_model",
            ),
        ),
    ],
    "chutes.chute.template.embedding": [
        _SDK,
        _SELECTOR,
        _IMAGE,
        ("chutes.image.standard.vllm", ("VLLM",)),
        ("chutes.chute.template.vllm", ("FORBIDDEN_FLAGS", "engine_env")),
        (
            _HELPERS,
            (
                "ENGINE_HOST",
                "ENGINE_PORT",
                "count_flags",
                "forbid_flags",
                "get_models",
                "gpu_count",
                "has_flag",
                "require_revision",
                "split_args",
                "start_engine",
            ),
        ),
    ],
    "chutes.chute.template.diffusion": [
        _SDK,
        _SELECTOR,
        _IMAGE,
        ("chutes.image.standard.diffusion", ("DIFFUSION",)),
    ],
}


def kind_of(value: object) -> object:
    if inspect.isclass(value):
        return CLASS
    if inspect.isfunction(value):
        return FUNCTION
    return type(value)


@pytest.mark.parametrize("module_name", list(PUBLIC))
def test_public_names_import_as_the_same_kind(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = sorted(name for name in PUBLIC[module_name] if not hasattr(module, name))
    assert missing == [], f"{module_name} no longer offers {missing}"
    kinds = {name: kind_of(getattr(module, name)) for name in PUBLIC[module_name]}
    assert kinds == PUBLIC[module_name]


@pytest.mark.parametrize("module_name", list(OFFERED_TOO))
def test_names_a_template_took_from_elsewhere_are_still_offered(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for source_name, names in OFFERED_TOO[module_name]:
        source = importlib.import_module(source_name)
        for name in names:
            assert getattr(module, name, None) is getattr(source, name), f"{module_name}.{name}"


def test_template_modules_import_from_the_template_package() -> None:
    for name in ("vllm", "sglang", "embedding", "diffusion", "helpers"):
        module = importlib.import_module(f"chutes.chute.template.{name}")
        assert module.__name__ == f"chutes.chute.template.{name}"


def test_the_chutes_console_script_is_chutes_cli_main() -> None:
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="chutes")
    assert entry.value == "chutes.cli:main"
    assert entry.load() is importlib.import_module("chutes.cli").main
    script = Path(sys.executable).parent / "chutes"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and re.fullmatch(r"chutes \(chutes-suite\) \S+\n", done.stdout)
