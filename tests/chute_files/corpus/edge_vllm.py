"""Written for this corpus (not from a public source): the vLLM template as the SDK reference
imports it, with engine_args given as a dict (issue 15)."""

from chutes.chute import NodeSelector
from chutes.chute.template import build_vllm_chute

chute = build_vllm_chute(
    username="corpus",
    model_name="unsloth/Llama-3.2-1B-Instruct",
    revision="9b58d4a36161a1e49ecf0a69d20b2736fef8e438",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24),
    engine_args=dict(max_model_len=16384, enforce_eager=False, trust_remote_code=True),
    concurrency=16,
)
