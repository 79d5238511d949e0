"""Where SDK code is running: on a developer's machine (local) or inside a chute instance (remote).

The runtime marks an instance by setting `CHUTES_EXECUTION_CONTEXT=REMOTE` before it imports the
chute file; anything else (usually unset) is the local context. The check is made when it is
needed, not cached, so tests and the runtime can switch it with the environment variable.
"""

from __future__ import annotations

import os
from typing import Final

EXECUTION_CONTEXT_ENV: Final = "CHUTES_EXECUTION_CONTEXT"
REMOTE: Final = "REMOTE"

DEV_MODE_ENV: Final = "CHUTES_DEV_MODE"


def is_remote() -> bool:
    """True inside a chute instance (`CHUTES_EXECUTION_CONTEXT=REMOTE`)."""
    return os.getenv(EXECUTION_CONTEXT_ENV) == REMOTE


def is_local() -> bool:
    """True on a developer's machine: anything but the remote context."""
    return not is_remote()


def is_dev_mode() -> bool:
    """True under `chutes run --dev` (`CHUTES_DEV_MODE=true`): cords are served on their public paths."""
    return os.getenv(DEV_MODE_ENV, "false").strip().lower() == "true"
