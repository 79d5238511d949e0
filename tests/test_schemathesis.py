"""Schemathesis against the running suite, from the OpenAPI document the gateway serves
(`/openapi.json`, gateway/openapi.py): every REST operation, anonymous and with an admin API key,
with schema-valid and schema-breaking inputs of its own making (examples, coverage and fuzzing
phases; a fixed seed, so a failure replays). What must hold for every answer:

- no 5xx but 501 (`not_a_server_error`);
- a status the document declares for the operation (`status_code_conformance`), with its content
  type (`content_type_conformance`) and a body its schema accepts (`response_schema_conformance`).

Not checked on purpose: that every schema-valid request is accepted (the document carries the
protos' shapes, not every rule the real API applies: name patterns, ranges, known images), and
schemathesis' `unsupported_method`: undeclared methods answer 405 (tests/test_gateway.py), but its
QUERY method is refused by Envoy's HTTP/1 parser before any route, as a 422.
tests/test_hardening_fuzz.py adds nastier bytes the document cannot describe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import RunningSuite
from tests.test_identity import admin

ST = str(Path(sys.executable).parent / "st")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
#: Cases per operation and phase: ~900 requests per run, two runs (25 cases took 50-90 s of the
#: suite's ~10 minute budget on 2 cores; a side run with -n 50 passed 3,567 cases).
EXAMPLES = 12


@pytest.mark.parametrize("who", ["anonymous", "admin"])
def test_every_operation_answers_as_documented(suite: RunningSuite, who: str) -> None:
    # One worker: with two threads, Python 3.11's ast.parse (hypothesis describing its lambdas)
    # crashed the run once ("AST constructor recursion depth mismatch"); one is no slower here.
    argv = [ST, "run", f"{suite.gateway}/openapi.json", "-n", str(EXAMPLES), "--workers", "1"]
    argv += ["--checks", CHECKS, "--seed", "20261202", "--no-color"]
    if who == "admin":
        made = admin(suite, "create-user", "--username", "st" + uuid.uuid4().hex[:8], "--balance", "5")
        argv += ["-H", f"Authorization: {made['api_key']}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary
    assert " passed" in summary and "generated" in summary, summary
