"""Ready-made chutes for common engines: `vllm.build_vllm_chute`, `sglang.build_sglang_chute`,
`embedding.build_embedding_chute`, `diffusion.build_diffusion_chute` (spec 9).

Each builder returns a ChutePack subclass: the chute (its startup hook launches the engine inside
an instance) plus the callables of its cords. The modules are imported on demand, as in the real
SDK (`from chutes.chute.template.vllm import build_vllm_chute`). What the OpenAI-compatible
engine templates (vLLM, SGLang, embedding) share is in `openai_engine`, what every engine template
needs to start its engine in `helpers`.
"""
