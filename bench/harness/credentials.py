"""The harness's own user of the suite: an admin API key, a hotkey that signs requests, a balance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    api_key: str
    public_key: bytes
    private_key: bytes
    hotkey: str
    user_id: str
    username: str

    @classmethod
    def create(cls, env: dict[str, str]) -> Credentials:
        import sr25519

        from services.identity.signatures import ss58_of

        public, private = sr25519.pair_from_seed(os.urandom(32))
        hotkey = ss58_of(public)
        command = [
            str(Path(sys.executable).parent / "chutes-suite"),
            "admin",
            "create-user",
            "--username",
            "bench" + os.urandom(4).hex(),
            "--hotkey",
            hotkey,
            # Enough to cover the deployment fees of the invocation scenarios' echo chutes.
            "--balance",
            "1000",
        ]
        made = json.loads(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)
        return cls(made["api_key"], public, private, hotkey, made["user_id"], made["username"])

    def signed(self, purpose: str, count: int) -> list[tuple[str, str, str]]:
        """`count` fresh (hotkey, nonce, signature) triples over `hotkey:nonce:purpose`."""
        import sr25519

        nonce = str(int(time.time()))
        message = f"{self.hotkey}:{nonce}:{purpose}".encode()
        pair = (self.public_key, self.private_key)
        # sr25519 signatures are randomized: the same message signs differently every time.
        return [(self.hotkey, nonce, sr25519.sign(pair, message).hex()) for _ in range(count)]


#: Hotkey scenarios pre-sign this many requests per second of load (well above what 2 cores serve).
SIGNATURES_PER_SECOND = 8_000

#: A wrk script that sends each pre-signed header set once, in order.
SIGNED_WRK_SCRIPT = """
local sets = {}
for line in io.lines("%(file)s") do sets[#sets + 1] = line end
local next_set = 0
request = function()
  next_set = next_set %% #sets + 1
  local hotkey, nonce, signature = sets[next_set]:match("(%%S+) (%%S+) (%%S+)")
  return wrk.format("GET", "%(path)s", {["X-Chutes-Hotkey"] = hotkey, ["X-Chutes-Nonce"] = nonce,
                                       ["X-Chutes-Signature"] = signature})
end
"""
