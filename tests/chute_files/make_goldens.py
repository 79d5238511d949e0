"""Record the deploy bodies the published `chutes` 0.6.9 CLI sends for the corpus files.

Run ONCE with a Python that has the published SDK installed (never ours), from anywhere:

    python -m venv /tmp/sdk069 && /tmp/sdk069/bin/pip install chutes==0.6.9
    cd /tmp && /tmp/sdk069/bin/python /work/main/tests/chute_files/make_goldens.py

For every `corpus/<name>.py` it runs the published `chutes deploy <name>:chute` code path up to the
request: the file is loaded by the published loader, the body is built by the published `_deploy`,
and the exact bytes it would sign and POST are written to `goldens/<name>.json`. A file the
published SDK refuses gets `goldens/<name>.error` with the reason instead. Nothing is sent: the
image check and the HTTP call are never reached (the signer is replaced by one that stops there).
The goldens are committed, so tests/test_sdk_corpus.py needs only our SDK.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
GOLDENS = HERE / "goldens"

# One file per process: chute files register global state (paths, modules) and some crash.
CHILD = r"""
import asyncio, builtins, os, sys
sys.path = [p for p in sys.path if p not in ("", os.getcwd())] + [os.getcwd()]
import chutes
assert "/work/main/" not in chutes.__file__, chutes.__file__
from chutes.chute import ChutePack
from chutes.entrypoint import deploy as published
from chutes.entrypoint._shared import load_chute

class Captured(Exception):
    pass

def capture(body):
    import orjson
    sys.stdout.buffer.write(orjson.dumps(body))
    sys.stdout.flush()
    raise Captured()

published.sign_request = lambda body, **kw: capture(body)
builtins.input = lambda prompt="": "y"
ref = sys.argv[1]
module, chute = load_chute(ref, config_path=None, debug=True)
chute = chute.chute if isinstance(chute, ChutePack) else chute
try:
    asyncio.run(published._deploy(ref, module, chute))
except Captured:
    pass
"""


def main() -> int:
    GOLDENS.mkdir(exist_ok=True)
    env = {**os.environ, "CHUTES_ALLOW_MISSING": "true", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CHUTES_EXECUTION_CONTEXT", None)
    for old in GOLDENS.glob("*"):
        old.unlink()
    for file in sorted(CORPUS.glob("*.py")):
        result = subprocess.run(
            [sys.executable, "-c", CHILD, f"{file.stem}:chute"],
            cwd=CORPUS,
            env=env,
            capture_output=True,
            timeout=120,
        )
        if result.returncode == 0 and result.stdout.startswith(b"{"):
            (GOLDENS / f"{file.stem}.json").write_bytes(result.stdout)
            print(f"ok      {file.name}")
        else:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit {result.returncode}, no body"
            # Drop loguru's timestamp and source prefix so re-running changes nothing.
            reason = re.sub(r"^\S+ \S+ \| \w+ +\| \S+ - ", "", reason)
            (GOLDENS / f"{file.stem}.error").write_text(reason + "\n")
            print(f"refused {file.name}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
