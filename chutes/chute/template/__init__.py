"""Ready-made chutes for common engines: `vllm.build_vllm_chute`, `sglang.build_sglang_chute`,
`embedding.build_embedding_chute`, `diffusion.build_diffusion_chute` (spec 9).

Each builder returns a ChutePack subclass: the chute (its startup hook launches the engine inside
an instance) plus the callables of its cords. What the OpenAI-compatible engine templates (vLLM,
SGLang, embedding) share is in `openai_engine`, what every engine template needs to start its
engine in `helpers`.

The builders are importable from this package too: the SDK reference writes
`from chutes.chute.template import build_vllm_chute` (the published package imports that one here;
the other three are offered the same way, which costs nothing more since they share its imports).
"""

from chutes.chute.template.diffusion import build_diffusion_chute
from chutes.chute.template.embedding import build_embedding_chute
from chutes.chute.template.sglang import build_sglang_chute
from chutes.chute.template.vllm import build_vllm_chute

__all__ = ["build_diffusion_chute", "build_embedding_chute", "build_sglang_chute", "build_vllm_chute"]
