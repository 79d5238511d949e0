"""Written for this corpus (not from a public source): the diffusion template with a revision
(issue 15: 0.6.9 sends null for it)."""

from chutes.chute import NodeSelector
from chutes.chute.template.diffusion import build_diffusion_chute

chute = build_diffusion_chute(
    username="corpus",
    name="edge-diffusion",
    model_name_or_url="stabilityai/stable-diffusion-xl-base-1.0",
    revision="462165984030d82259a11f4367a4eed129e94a7b",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24),
)
