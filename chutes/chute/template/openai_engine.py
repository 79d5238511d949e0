"""What the OpenAI-compatible engine templates share (spec 9.1-9.3): the vLLM, SGLang and embedding
chutes each serve a model pinned to a revision through an engine speaking OpenAI's API on
ENGINE_PORT, behind passthrough cords.

Here: the chute such a template builds; the API's request and response models (the cords'
schemas; bodies go to the engine as they are) and the UI's minified ones; the passthrough cords
and the pack holding their callables; and the engine's environment. (vLLM's server command line,
which the embedding chute runs too, is in `vllm`.) The template modules re-export what they
offered before this module existed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, Field

from chutes.chute.base import Chute, ChutePack
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template.helpers import (
    ENGINE_PORT,
    EngineArgs,
    get_models,
    parse_stream_chunk,
    require_revision,
)
from chutes.image import Image

# ---- the chute ---------------------------------------------------------------------------------


def engine_chute(
    builder: str,
    standard_template: str,
    check_args: Callable[[EngineArgs], None],
    *,
    username: str,
    model_name: str,
    node_selector: NodeSelector,
    image: str | Image,
    tagline: str,
    readme: str,
    concurrency: int,
    engine_args: EngineArgs,
    revision: str | None,
    max_instances: int,
    scaling_threshold: float,
    shutdown_after_seconds: int,
    allow_external_egress: bool,
    tee: bool,
    name: str | None = None,
) -> tuple[Chute, str]:
    """The chute an engine template builds (named after the model unless `name` says otherwise)
    and the revision it is pinned to: `revision` is required, and `engine_args` must pass
    `check_args`, before it is made."""
    pinned = require_revision(builder, revision, engine_args, model_name)
    check_args(engine_args)
    chute = Chute(
        username=username,
        name=name or model_name,
        tagline=tagline,
        readme=readme,
        image=image,
        node_selector=node_selector,
        concurrency=concurrency,
        standard_template=standard_template,
        revision=pinned,
        shutdown_after_seconds=shutdown_after_seconds,
        max_instances=max_instances,
        scaling_threshold=scaling_threshold,
        allow_external_egress=allow_external_egress,
        tee=tee,
    )
    return chute, pinned


# ---- request and response models (schemas shown to users; passthrough bodies go to the engine as is)


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


# The completion choices' stop_reason carries this description in the published templates, and
# so in the cords' output schemas of every deploy body.
_STOP_REASON: Final = (
    "The stop string or token id that caused the completion to stop, None if the completion "
    "finished for some other reason including encountering the EOS token"
)


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
    stop_reason: int | str | None = Field(default=None, description=_STOP_REASON)
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
    stop_reason: int | str | None = Field(default=None, description=_STOP_REASON)


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


class OpenAIChutePack(ChutePack):
    """A chute of an OpenAI-compatible engine and its cord callables."""

    chat: Callable[..., Any]
    completion: Callable[..., Any]
    chat_stream: Callable[..., Any]
    completion_stream: Callable[..., Any]
    models: Callable[..., Any]


PackT = TypeVar("PackT", bound=OpenAIChutePack)


def openai_pack(pack: type[PackT], chute: Chute, cords: Mapping[str, Callable[..., Any]]) -> PackT:
    """A `pack` of the chute and the callables `add_openai_cords` registered on it."""
    return pack(
        chute=chute,
        chat=cords["chat"],
        completion=cords["completion"],
        chat_stream=cords["chat_stream"],
        completion_stream=cords["completion_stream"],
        models=cords["get_models"],
    )


# ---- the engine --------------------------------------------------------------------------------


def engine_env(**extra: str) -> dict[str, str]:
    """The engine's environment: the instance's, offline Hugging Face (the model is downloaded)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn", **extra}


# ---- the cords ---------------------------------------------------------------------------------


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
