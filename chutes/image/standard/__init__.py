"""References of the platform's standard images (spec 5.3), as the real SDK pins them.

A chute given one of these strings deploys with that reference as its `image`; the templates use
them as their defaults. Each also has its own module (`chutes.image.standard.vllm.VLLM`, ...), as
in the real SDK, so chute files importing either path load unchanged.
"""

from chutes.image.standard.diffusion import DIFFUSION
from chutes.image.standard.sglang import SGLANG
from chutes.image.standard.vllm import VLLM

__all__ = ["DIFFUSION", "SGLANG", "VLLM"]
