"""The vLLM template: an OpenAI-compatible LLM chute in one call (spec 9.1).

    chute = build_vllm_chute(
        username="me", model_name="org/model", revision="<40-hex commit>",
        node_selector=NodeSelector(gpu_count=1),
    )

The chute's startup hook downloads the pinned model, launches vLLM on 127.0.0.1:10101 with a
random API key, waits for it, warms it up and checks it enforces the key; the cords are
passthroughs to the engine (`/v1/chat/completions`, `/v1/completions`, `/tokenize`, ...), whose
Python bodies only post-process results on the client side.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from chutes.chute.base import Chute, ChutePack
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template.helpers import (
    ENGINE_HOST,
    ENGINE_PORT,
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
from chutes.image import Image
from chutes.image.standard.vllm import VLLM

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


# ---- request and response models (schemas shown to users; passthrough bodies go to vLLM as is) ----


class DefaultRole(Enum):
    user = "user"
    assistant = "assistant"
    developer = "developer"


class ChatMessage(BaseModel):
    role: str
    content: str


class Logprob(BaseModel):
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class BaseRequest(BaseModel):
    model: str
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: int | None = None
    presence_penalty: float | None = 0.0
    response_format: ResponseFormat | None = None
    seed: int | None = Field(None, ge=0, le=9223372036854775807)
    stop: str | list[str] | None = Field(default_factory=list)
    stream: bool | None = False
    temperature: float | None = 0.7
    top_p: float | None = 1.0
    best_of: int | None = None
    use_beam_search: bool = False
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    stop_token_ids: list[int] | None = Field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    prompt_logprobs: int | None = None


class ChatCompletionRequest(BaseRequest):
    messages: list[ChatMessage]


class CompletionRequest(BaseRequest):
    prompt: str


class TokenizeRequest(BaseModel):
    model: str
    prompt: str
    add_special_tokens: bool


class DetokenizeRequest(BaseModel):
    model: str
    tokens: list[int]


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0


class ChatCompletionLogProb(BaseModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None


class ChatCompletionLogProbsContent(ChatCompletionLogProb):
    top_logprobs: list[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(BaseModel):
    content: list[ChatCompletionLogProbsContent] | None = None


class ChatCompletionResponseChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None


class ChatCompletionResponseStreamChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionStreamResponse(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionResponseStreamChoice]
    usage: UsageInfo | None = None


class CompletionLogProbs(BaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionResponseChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionResponseChoice]
    usage: UsageInfo


class CompletionResponseStreamChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class CompletionStreamResponse(BaseModel):
    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionResponseStreamChoice]
    usage: UsageInfo | None = None


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


class MinifiedMessage(BaseModel):
    role: DefaultRole = DefaultRole.user
    content: str = ""


def minified_models(model_name: str) -> dict[str, type[BaseModel]]:
    """The simplified request models of the UI, defaulting `model` to this chute's model."""

    class MinifiedStreamChatCompletion(BaseModel):
        messages: list[MinifiedMessage] = [MinifiedMessage()]
        temperature: float = 0.7
        seed: int = 42
        stream: bool = True
        max_tokens: int = 1024
        model: str = model_name

    class MinifiedChatCompletion(MinifiedStreamChatCompletion):
        stream: bool = False

    class MinifiedStreamCompletion(BaseModel):
        prompt: str
        temperature: float = 0.7
        seed: int = 42
        stream: bool = True
        max_tokens: int = 1024
        model: str = model_name

    class MinifiedCompletion(MinifiedStreamCompletion):
        stream: bool = False

    return {
        "chat_stream": MinifiedStreamChatCompletion,
        "chat": MinifiedChatCompletion,
        "completion_stream": MinifiedStreamCompletion,
        "completion": MinifiedCompletion,
    }


class VLLMChute(ChutePack):
    """A vLLM chute and its cord callables."""

    chat: Callable[..., Any]
    completion: Callable[..., Any]
    chat_stream: Callable[..., Any]
    completion_stream: Callable[..., Any]
    models: Callable[..., Any]


# ---- the engine --------------------------------------------------------------------------------


def check_engine_args(engine_args: str | None) -> None:
    """Reject engine_args the template cannot honour (it sets these flags itself)."""
    forbid_flags(engine_args, FORBIDDEN_FLAGS)
    if count_flags(split_args(engine_args), *_TP_FLAGS) > 1:
        raise ValueError(
            "Please use only --tensor-parallel-size (or omit and let gpu_count set it automatically)"
        )


def vllm_command(
    model_name: str,
    served_model_name: str,
    revision: str,
    api_key: str,
    engine_args: str | None,
    gpus: int,
    tls: bool = False,
) -> list[str]:
    """The vLLM server command line: the template's fixed flags, then engine_args plus defaults."""
    check_engine_args(engine_args)
    extra = split_args(engine_args)
    if not has_flag(extra, *_TP_FLAGS):
        extra += ["--tensor-parallel-size", str(gpus)]
    for flag, opposites in _DEFAULT_FLAGS:
        if not has_flag(extra, flag, *opposites):
            extra.append(flag)
    if "affine" in served_model_name.lower() and not has_flag(extra, "--enable-return-hidden-states"):
        extra.append("--enable-return-hidden-states")
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_name,
        "--served-model-name",
        served_model_name,
        "--revision",
        revision,
        "--api-key",
        api_key,
        "--port",
        str(ENGINE_PORT),
        "--host",
        ENGINE_HOST,
    ]
    if tls:
        command += ["--ssl-cert-reqs", "2"]
    return command + extra


def engine_env(**extra: str) -> dict[str, str]:
    """The engine's environment: the instance's, offline Hugging Face (the model is downloaded)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn", **extra}


# ---- the builder -------------------------------------------------------------------------------


def build_vllm_chute(
    username: str,
    model_name: str,
    node_selector: NodeSelector,
    image: str | Image = VLLM,
    tagline: str = "",
    readme: str = "",
    concurrency: int = 32,
    engine_args: str | None = None,
    revision: str | None = None,
    max_instances: int = 1,
    scaling_threshold: float = 0.75,
    shutdown_after_seconds: int = 300,
    allow_external_egress: bool = False,
    tee: bool = False,
) -> VLLMChute:
    """A chute serving `model_name` (pinned to `revision`) with vLLM; `engine_args` is extra vLLM
    command-line flags as one string."""
    pinned = require_revision("build_vllm_chute", revision, engine_args)
    check_engine_args(engine_args)
    chute = Chute(
        username=username,
        name=model_name,
        tagline=tagline,
        readme=readme,
        image=image,
        node_selector=node_selector,
        concurrency=concurrency,
        standard_template="vllm",
        revision=pinned,
        shutdown_after_seconds=shutdown_after_seconds,
        max_instances=max_instances,
        scaling_threshold=scaling_threshold,
        allow_external_egress=allow_external_egress,
        tee=tee,
    )

    @chute.on_startup()
    async def initialize_vllm(self: Chute) -> None:
        api_key = await start_engine(
            self, model_name, pinned,
            lambda key: vllm_command(model_name, self.name, pinned, key, engine_args, gpu_count(self)),
            engine_env(),
        )  # fmt: skip
        await warmup_model(self, api_key)
        await validate_auth(self, api_key)

    cords = add_openai_cords(chute, model_name, tokenize=True)
    return VLLMChute(
        chute=chute,
        chat=cords["chat"],
        completion=cords["completion"],
        chat_stream=cords["chat_stream"],
        completion_stream=cords["completion_stream"],
        models=cords["get_models"],
    )


def add_openai_cords(
    chute: Chute, model_name: str, tokenize: bool, sglang: bool = False
) -> dict[str, Callable[..., Any]]:
    """The passthrough cords of an OpenAI-compatible engine on ENGINE_PORT, by function name."""
    minified = minified_models(model_name)
    common: dict[str, Any] = {"passthrough": True, "passthrough_port": ENGINE_PORT, "method": "POST"}
    if sglang:
        common["sglang_passthrough"] = True

    @chute.cord(
        passthrough_path="/v1/chat/completions",
        public_api_path="/v1/chat/completions",
        stream=True,
        input_schema=ChatCompletionRequest,
        minimal_input_schema=minified["chat_stream"],
        **common,
    )
    async def chat_stream(encoded_chunk: str | bytes) -> ChatCompletionStreamResponse:
        return parse_stream_chunk(encoded_chunk)  # type: ignore[no-any-return]

    @chute.cord(
        passthrough_path="/v1/completions",
        public_api_path="/v1/completions",
        stream=True,
        input_schema=CompletionRequest,
        minimal_input_schema=minified["completion_stream"],
        **common,
    )
    async def completion_stream(encoded_chunk: str | bytes) -> CompletionStreamResponse:
        return parse_stream_chunk(encoded_chunk)  # type: ignore[no-any-return]

    @chute.cord(
        passthrough_path="/v1/chat/completions",
        public_api_path="/v1/chat/completions",
        input_schema=ChatCompletionRequest,
        minimal_input_schema=minified["chat"],
        **common,
    )
    async def chat(data: Any) -> ChatCompletionResponse:
        return data  # type: ignore[no-any-return]

    callables: dict[str, Callable[..., Any]] = {
        "chat_stream": chat_stream,
        "completion_stream": completion_stream,
        "chat": chat,
    }

    if tokenize:

        @chute.cord(
            path="/do_tokenize",
            passthrough_path="/tokenize",
            public_api_path="/tokenize",
            input_schema=TokenizeRequest,
            minimal_input_schema=TokenizeRequest,
            **common,
        )
        async def do_tokenize(data: Any) -> TokenizeResponse:
            return data  # type: ignore[no-any-return]

        @chute.cord(
            path="/do_detokenize",
            passthrough_path="/detokenize",
            public_api_path="/detokenize",
            input_schema=DetokenizeRequest,
            minimal_input_schema=DetokenizeRequest,
            **common,
        )
        async def do_detokenize(data: Any) -> DetokenizeResponse:
            return data  # type: ignore[no-any-return]

        callables.update(do_tokenize=do_tokenize, do_detokenize=do_detokenize)

    @chute.cord(
        passthrough_path="/v1/completions",
        public_api_path="/v1/completions",
        input_schema=CompletionRequest,
        minimal_input_schema=minified["completion"],
        **common,
    )
    async def completion(data: Any) -> CompletionResponse:
        return data  # type: ignore[no-any-return]

    callables["completion"] = completion
    callables["get_models"] = chute.cord(
        passthrough_path="/v1/models",
        public_api_path="/v1/models",
        public_api_method="GET",
        **{**common, "method": "GET"},
    )(get_models)
    return callables
