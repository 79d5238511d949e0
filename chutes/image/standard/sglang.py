"""The standard SGLang image."""

from typing import Final

SGLANG: Final = "chutes/sglang:nightly-2025111800"
