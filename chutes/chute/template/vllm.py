"""The vLLM template: an OpenAI-compatible LLM chute in one call (spec 9.1).

    chute = build_vllm_chute(
        username="me", model_name="org/model", revision="<40-hex commit>",
        node_selector=NodeSelector(gpu_count=1),
    )

The chute's startup hook downloads the pinned model, launches vLLM on 127.0.0.1:10101 with a
random API key, waits for it, warms it up and checks it enforces the key; the cords are
passthroughs to the engine (`/v1/chat/completions`, `/v1/completions`, `/tokenize`, ...), whose
Python bodies only post-process results on the client side.

The request and response models and the cords are those of every OpenAI-compatible engine
template (`openai_engine`); vLLM's server command line is here, and the embedding template runs
it too.
"""

from __future__ import annotations

import sys
from typing import Final

from chutes.chute.base import Chute, ChutePack
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template.helpers import (
    ENGINE_HOST,
    ENGINE_PORT,
    EngineArgs,
    count_flags,
    forbid_flags,
    get_models,
    gpu_count,
    has_flag,
    parse_stream_chunk,
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
    DetokenizeRequest,
    DetokenizeResponse,
    Logprob,
    MinifiedMessage,
    OpenAIChutePack,
    ResponseFormat,
    TokenizeRequest,
    TokenizeResponse,
    UsageInfo,
    add_openai_cords,
    engine_chute,
    engine_env,
    minified_models,
    openai_pack,
)
from chutes.image import Image
from chutes.image.standard.vllm import VLLM

# This module's names, those it offered before the OpenAI-compatible engine code moved to
# `openai_engine` (chute files import the models from here), and those it got from elsewhere.
__all__ = [
    "ENGINE_HOST",
    "ENGINE_PORT",
    "FORBIDDEN_FLAGS",
    "VLLM",
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
    "DetokenizeRequest",
    "DetokenizeResponse",
    "Image",
    "Logprob",
    "MinifiedMessage",
    "NodeSelector",
    "ResponseFormat",
    "TokenizeRequest",
    "TokenizeResponse",
    "UsageInfo",
    "VLLMChute",
    "add_openai_cords",
    "build_vllm_chute",
    "check_engine_args",
    "count_flags",
    "engine_env",
    "forbid_flags",
    "get_models",
    "gpu_count",
    "has_flag",
    "minified_models",
    "parse_stream_chunk",
    "require_revision",
    "server_args",
    "server_command",
    "split_args",
    "start_engine",
    "validate_auth",
    "vllm_command",
    "warmup_model",
]

#: Flags the template sets itself.
FORBIDDEN_FLAGS: Final = {
    "--served-model-name": "the engine serves the model under the chute's name",
    "--api-key": "the template generates the engine's API key",
}

_TP_FLAGS: Final = ("--tensor-parallel-size", "--tp", "-tp")

# Defaults appended unless engine_args sets the flag or its opposite: usage details in responses,
# and no request logging (prompts are the users' data).
_DEFAULT_FLAGS: Final = (
    ("--enable-prompt-tokens-details", ()),
    ("--disable-custom-all-reduce", ()),
    ("--no-enable-log-requests", ("--enable-log-requests", "--disable-log-requests")),
    ("--no-enable-log-outputs", ("--enable-log-outputs",)),
    ("--no-enable-log-deltas", ("--enable-log-deltas",)),
)


class VLLMChute(OpenAIChutePack):
    """A vLLM chute and its cord callables."""


# ---- vLLM's server (the embedding template runs it too) ----------------------------------------


def check_engine_args(engine_args: EngineArgs) -> None:
    """Reject engine_args the template cannot honour (it sets these flags itself)."""
    forbid_flags(engine_args, FORBIDDEN_FLAGS)
    if count_flags(split_args(engine_args), *_TP_FLAGS) > 1:
        raise ValueError(
            "Please use only --tensor-parallel-size (or omit and let gpu_count set it automatically)"
        )


def server_args(engine_args: EngineArgs, gpus: int) -> list[str]:
    """engine_args checked and split, with `--tensor-parallel-size <gpus>` unless they set the
    tensor parallelism."""
    check_engine_args(engine_args)
    extra = split_args(engine_args)
    if not has_flag(extra, *_TP_FLAGS):
        extra += ["--tensor-parallel-size", str(gpus)]
    return extra


def server_command(model_name: str, served_model_name: str, revision: str, *options: str) -> list[str]:
    """The start of vLLM's OpenAI server command line: the pinned model under the chute's name,
    then `options`, then the engine's address."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_name,
        "--served-model-name",
        served_model_name,
        "--revision",
        revision,
        *options,
        "--port",
        str(ENGINE_PORT),
        "--host",
        ENGINE_HOST,
    ]


def vllm_command(
    model_name: str,
    served_model_name: str,
    revision: str,
    api_key: str,
    engine_args: EngineArgs,
    gpus: int,
    tls: bool = False,
) -> list[str]:
    """The vLLM server command line: the template's fixed flags, then engine_args plus defaults."""
    extra = server_args(engine_args, gpus)
    for flag, opposites in _DEFAULT_FLAGS:
        if not has_flag(extra, flag, *opposites):
            extra.append(flag)
    if "affine" in served_model_name.lower() and not has_flag(extra, "--enable-return-hidden-states"):
        extra.append("--enable-return-hidden-states")
    command = server_command(model_name, served_model_name, revision, "--api-key", api_key)
    if tls:
        command += ["--ssl-cert-reqs", "2"]
    return command + extra


# ---- the builder -------------------------------------------------------------------------------


def build_vllm_chute(
    username: str,
    model_name: str,
    node_selector: NodeSelector,
    image: str | Image = VLLM,
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
) -> VLLMChute:
    """A chute serving `model_name` (pinned to `revision`) with vLLM, named `name` when given (ours:
    the published 0.6.9 has no `name`, but the platform's teeify writes one); `engine_args` is extra vLLM
    command-line flags as one string."""
    chute, pinned = engine_chute(
        "build_vllm_chute", "vllm", check_engine_args,
        username=username, model_name=model_name, node_selector=node_selector, image=image,
        tagline=tagline, readme=readme, concurrency=concurrency, engine_args=engine_args,
        revision=revision, max_instances=max_instances, scaling_threshold=scaling_threshold,
        shutdown_after_seconds=shutdown_after_seconds, allow_external_egress=allow_external_egress, tee=tee,
        name=name,
    )  # fmt: skip

    @chute.on_startup()
    async def initialize_vllm(self: Chute) -> None:
        api_key = await start_engine(
            self, model_name, pinned,
            lambda key: vllm_command(model_name, self.name, pinned, key, engine_args, gpu_count(self)),
            engine_env(),
        )  # fmt: skip
        await warmup_model(self, api_key=api_key)
        await validate_auth(self, api_key=api_key)

    return openai_pack(VLLMChute, chute, add_openai_cords(chute, model_name, tokenize=True))
