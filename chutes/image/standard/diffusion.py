"""The standard diffusers image."""

from typing import Final

DIFFUSION: Final = "chutes/diffusion:0.34.0.po"
