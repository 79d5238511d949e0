"""The SGLang template: like the vLLM one, served by SGLang (spec 9.2).

Same signature and cords as `build_vllm_chute` minus tokenize/detokenize; the cords are SGLang
passthroughs (each request gets a `rid` so a client disconnect aborts it in the engine). The
chute's `standard_template` is "vllm", as the real SDK sets it: the platform treats both as the
same OpenAI-compatible LLM family.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Final

import httpx

from chutes.chute.base import Chute, ChutePack
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template.helpers import (
    ENGINE_HOST,
    ENGINE_PORT,
    ENGINE_URL,
    EngineArgs,
    forbid_flags,
    gpu_count,
    has_flag,
    require_revision,
    split_args,
    start_engine,
    validate_auth,
    warmup_model,
)
from chutes.chute.template.openai_engine import (
    BaseRequest,
    ChatCompletionLogProb,
    ChatCompletionLogProbs,
    ChatCompletionLogProbsContent,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    CompletionLogProbs,
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
    DefaultRole,
    DeltaMessage,
    Logprob,
    OpenAIChutePack,
    ResponseFormat,
    UsageInfo,
    add_openai_cords,
    engine_chute,
    engine_env,
    openai_pack,
)
from chutes.image import Image
from chutes.image.standard.sglang import SGLANG

# This module's own names, and those it got from elsewhere (chute files may import them from here),
# among them the OpenAI request/response models, which the published SDK defines in this module.
__all__ = [
    "ENGINE_HOST",
    "ENGINE_PORT",
    "ENGINE_URL",
    "FORBIDDEN_FLAGS",
    "SGLANG",
    "BaseRequest",
    "ChatCompletionLogProb",
    "ChatCompletionLogProbs",
    "ChatCompletionLogProbsContent",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionResponseChoice",
    "ChatCompletionResponseStreamChoice",
    "ChatCompletionStreamResponse",
    "ChatMessage",
    "Chute",
    "ChutePack",
    "CompletionLogProbs",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionResponseChoice",
    "CompletionResponseStreamChoice",
    "CompletionStreamResponse",
    "DefaultRole",
    "DeltaMessage",
    "Image",
    "Logprob",
    "NodeSelector",
    "ResponseFormat",
    "SGLangChute",
    "UsageInfo",
    "add_openai_cords",
    "build_sglang_chute",
    "engine_env",
    "forbid_flags",
    "gpu_count",
    "has_flag",
    "require_revision",
    "sglang_command",
    "split_args",
    "start_engine",
    "validate_auth",
    "warmup_model",
]

FORBIDDEN_FLAGS: Final = {"--api-key": "the template generates the engine's API key"}

_TP_FLAGS: Final = ("--tp", "--tp-size", "--tensor-parallel-size")


class SGLangChute(OpenAIChutePack):
    """An SGLang chute and its cord callables."""


def sglang_command(
    model_name: str, revision: str, api_key: str, engine_args: EngineArgs, gpus: int, tls: bool = False
) -> list[str]:
    """The SGLang server command line: engine_args plus the template's defaults, then the key."""
    forbid_flags(engine_args, FORBIDDEN_FLAGS)
    extra = split_args(engine_args)
    if not has_flag(extra, *_TP_FLAGS):
        extra += ["--tp", str(gpus)]
    for flag in ("--enable-cache-report", "--enable-return-hidden-states", "--disable-custom-all-reduce"):
        if not has_flag(extra, flag):
            extra.append(flag)
    extra += ["--revision", revision]
    if not has_flag(extra, "--gc-threshold"):
        extra += ["--gc-threshold", "50000", "100", "100"]
    if not has_flag(extra, "--log-requests-level"):
        extra += ["--log-requests-level", "0"]
    command = [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--host",
        ENGINE_HOST,
        "--port",
        str(ENGINE_PORT),
        "--model-path",
        model_name,
        *extra,
        "--api-key",
        api_key,
    ]
    if tls:
        command += ["--ssl-cert-reqs", "2", "--skip-server-warmup"]
    return command


def build_sglang_chute(
    username: str,
    model_name: str,
    node_selector: NodeSelector,
    image: str | Image = SGLANG,
    tagline: str = "",
    readme: str = "",
    concurrency: int = 32,
    engine_args: EngineArgs = None,
    revision: str | None = None,
    max_instances: int = 1,
    scaling_threshold: float = 0.75,
    shutdown_after_seconds: int = 300,
    allow_external_egress: bool = False,
    tee: bool = False,
    name: str | None = None,
) -> SGLangChute:
    """A chute serving `model_name` (pinned to `revision`) with SGLang, named `name` when given
    (ours, as build_vllm_chute's); `engine_args` is extra
    SGLang command-line flags as one string."""
    chute, pinned = engine_chute(
        "build_sglang_chute", "vllm", partial(forbid_flags, flags=FORBIDDEN_FLAGS),
        username=username, model_name=model_name, node_selector=node_selector, image=image,
        tagline=tagline, readme=readme, concurrency=concurrency, engine_args=engine_args,
        revision=revision, max_instances=max_instances, scaling_threshold=scaling_threshold,
        shutdown_after_seconds=shutdown_after_seconds, allow_external_egress=allow_external_egress, tee=tee,
        name=name,
    )  # fmt: skip

    @chute.on_startup()
    async def initialize_sglang(self: Chute) -> None:
        api_key = await start_engine(
            self, model_name, pinned,
            lambda key: sglang_command(model_name, pinned, key, engine_args, gpu_count(self)),
            engine_env(),
        )  # fmt: skip
        await warmup_model(self, api_key=api_key)
        # Warmup allocated what serving needs; freezing the GC keeps its pauses out of requests.
        async with httpx.AsyncClient(base_url=ENGINE_URL, timeout=60.0) as client:
            await client.post("/freeze_gc", headers={"Authorization": f"Bearer {api_key}"})
        await validate_auth(self, api_key=api_key)

    return openai_pack(SGLangChute, chute, add_openai_cords(chute, model_name, tokenize=False, sglang=True))
