"""The version of the published `chutes` SDK whose interface this SDK implements.

Chute files and tools read it where the published package keeps it (`from chutes._version import
version`), and it is the SDK version recorded for images of a local suite when none is given
(`chutes-suite admin add-image`): the platform gates deploys and TEE attestation on it.
"""

from typing import Final

version: Final = "0.6.9"
