"""Written for this corpus (not from a public source): the SGLang template with its re-exported
OpenAI models (issue 15)."""

from chutes.chute import NodeSelector
from chutes.chute.template.sglang import ChatCompletionRequest, build_sglang_chute  # noqa: F401

chute = build_sglang_chute(
    username="corpus",
    readme="sglang edge",
    model_name="Qwen/Qwen2.5-7B-Instruct",
    revision="a09a35458c702b33eeacc393d103063234e8bc28",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=48),
    engine_args="--context-length 32768",
)
