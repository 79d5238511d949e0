"""The embedding template: an OpenAI-compatible `/v1/embeddings` chute served by vLLM (spec 9.3).

The pooling strategy defaults to one chosen from the model's name; long inputs are embedded in
chunks (vLLM's chunked processing) up to `max_embed_len` tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel

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
    require_revision,
    split_args,
    start_engine,
)
from chutes.chute.template.openai_engine import engine_chute, engine_env
from chutes.chute.template.vllm import FORBIDDEN_FLAGS, server_args, server_command
from chutes.image import Image
from chutes.image.standard.vllm import VLLM

# This module's own names, and those it got from elsewhere (chute files may import them from here).
__all__ = [
    "ENGINE_HOST",
    "ENGINE_PORT",
    "FORBIDDEN_FLAGS",
    "VLLM",
    "Chute",
    "ChutePack",
    "EmbeddingChutePack",
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "Image",
    "MinifiedEmbeddingRequest",
    "NodeSelector",
    "build_embedding_chute",
    "count_flags",
    "embedding_command",
    "engine_env",
    "forbid_flags",
    "get_models",
    "get_optimal_pooling_type",
    "gpu_count",
    "has_flag",
    "pooler_config",
    "require_revision",
    "split_args",
    "start_engine",
]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = 0
    prompt_tokens_details: dict[str, Any] | None = None


class EmbeddingData(BaseModel):
    index: int
    object: str = "embedding"
    embedding: list[float]


class EmbeddingRequest(BaseModel):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = None
    user: str | None = None
    truncate_prompt_tokens: int | None = None


class EmbeddingResponse(BaseModel):
    id: str
    object: str = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class MinifiedEmbeddingRequest(BaseModel):
    input: str | list[str]
    model: str | None = None


class EmbeddingChutePack(ChutePack):
    """An embedding chute and its cord callable."""

    embed: Callable[..., Any]


def get_optimal_pooling_type(model_name: str) -> str:
    """The pooling a model family was trained with, guessed from its name (MEAN by default)."""
    name = model_name.lower()
    if "e5-" in name or "multilingual-e5" in name:
        return "MEAN"
    if "bge-" in name:
        return "CLS"
    if "gte-" in name:
        return "LAST"
    if "sentence-t5" in name or "st5" in name:
        return "MEAN"
    if "jina-embeddings" in name:
        return "MEAN"
    if "qwen" in name and "embedding" in name:
        return "LAST"
    return "MEAN"


def pooler_config(pooling_type: str, enable_chunked_processing: bool, max_embed_len: int) -> dict[str, Any]:
    """vLLM's `--pooler-config`."""
    config: dict[str, Any] = {"pooling_type": pooling_type}
    if enable_chunked_processing:
        config["enable_chunked_processing"] = True
        config["max_embed_len"] = max_embed_len
    return config


def embedding_command(
    model_name: str,
    served_model_name: str,
    revision: str,
    api_key: str,
    engine_args: EngineArgs,
    gpus: int,
    pooler: dict[str, Any],
) -> list[str]:
    """The vLLM embedding server command line."""
    extra = server_args(engine_args, gpus)
    command = server_command(model_name, served_model_name, revision, "--pooler-config", json.dumps(pooler))
    return [*command, "--api-key", api_key, *extra]


def build_embedding_chute(
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
    pooling_type: str = "auto",
    max_embed_len: int = 3072000,
    enable_chunked_processing: bool = True,
    allow_external_egress: bool = False,
    tee: bool = False,
) -> EmbeddingChutePack:
    """A chute serving embeddings of `model_name` (pinned to `revision`) with vLLM."""
    chute, pinned = engine_chute(
        "build_embedding_chute", "embedding", partial(forbid_flags, flags=FORBIDDEN_FLAGS),
        username=username, model_name=model_name, node_selector=node_selector, image=image,
        tagline=tagline, readme=readme, concurrency=concurrency, engine_args=engine_args,
        revision=revision, max_instances=max_instances, scaling_threshold=scaling_threshold,
        shutdown_after_seconds=shutdown_after_seconds, allow_external_egress=allow_external_egress, tee=tee,
    )  # fmt: skip
    pooling = get_optimal_pooling_type(model_name) if pooling_type == "auto" else pooling_type
    pooler = pooler_config(pooling, enable_chunked_processing, max_embed_len)

    @chute.on_startup()
    async def initialize_vllm_embedding(self: Chute) -> None:
        extra_env = {"VLLM_ENABLE_CHUNKED_PROCESSING": "true"} if enable_chunked_processing else {}
        gpus = gpu_count(self)
        await start_engine(
            self, model_name, pinned,
            lambda key: embedding_command(model_name, self.name, pinned, key, engine_args, gpus, pooler),
            engine_env(**extra_env),
        )  # fmt: skip

    @chute.cord(
        passthrough_path="/v1/embeddings",
        passthrough_port=ENGINE_PORT,
        public_api_path="/v1/embeddings",
        method="POST",
        passthrough=True,
        input_schema=EmbeddingRequest,
        minimal_input_schema=MinifiedEmbeddingRequest,
    )
    async def embed(data: Any) -> EmbeddingResponse:
        return data  # type: ignore[no-any-return]

    chute.cord(
        passthrough_path="/v1/models",
        passthrough_port=ENGINE_PORT,
        public_api_path="/v1/models",
        public_api_method="GET",
        method="GET",
        passthrough=True,
    )(get_models)

    return EmbeddingChutePack(chute=chute, embed=embed)
