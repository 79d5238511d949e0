"""The standard vLLM image."""

from typing import Final

VLLM: Final = "chutes/vllm:nightly-2025111700"
