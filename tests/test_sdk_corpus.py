"""Chute files written for the published SDK deploy with our SDK exactly as with `chutes` 0.6.9.

tests/chute_files/corpus/ holds real chute files, unchanged (sources in its README), plus a few
written to cover edge cases. tests/chute_files/goldens/<name>.json are the bytes the published
0.6.9 CLI would POST to /chutes/ for `chutes deploy <name>:chute`, recorded once by
tests/chute_files/make_goldens.py; `<name>.error` marks a file 0.6.9 itself cannot deploy in that
environment. Each golden file must load with our SDK and give the same body, byte for byte: what a
porting author would otherwise discover as a silently different schema on the platform.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chutes.cli.api import compact
from chutes.cli.deploy import deploy_body
from chutes.runner import ChuteLoadError, load_chute

FILES = Path(__file__).parent / "chute_files"
CORPUS = FILES / "corpus"
GOLDENS = FILES / "goldens"
GOLDEN_NAMES = sorted(path.stem for path in GOLDENS.glob("*.json"))


@pytest.fixture
def in_corpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The published CLI loads ./<module>.py from the working directory, and ADD directives glob
    # relative to it; a file's module must not leak into the next test.
    monkeypatch.chdir(CORPUS)
    monkeypatch.delenv("CHUTES_EXECUTION_CONTEXT", raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(CORPUS) in str(sys.modules[name].__file__):
            del sys.modules[name]


def test_corpus_is_complete() -> None:
    """Every corpus file has a golden or a recorded refusal, and the README lists it."""
    readme = (CORPUS / "README.md").read_text()
    for file in sorted(CORPUS.glob("*.py")):
        assert (GOLDENS / f"{file.stem}.json").exists() or (GOLDENS / f"{file.stem}.error").exists(), (
            file.name
        )
        assert f"`{file.name}`" in readme, f"{file.name} is not listed in corpus/README.md"
    assert len(GOLDEN_NAMES) >= 15


@pytest.mark.usefixtures("in_corpus")
@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_deploy_body_matches_published_sdk(name: str) -> None:
    golden = (GOLDENS / f"{name}.json").read_bytes()
    loaded = load_chute(f"{name}:chute")
    expected = json.loads(golden)
    body = deploy_body(loaded, public=expected["public"], logo_id=expected["logo_id"])
    ours = compact(body)
    if ours != golden:
        # Compare field by field first so a failure names what differs, not just two long lines.
        for key in expected:
            assert body.get(key) == expected[key], f"{name}: {key} differs"
        assert list(body) == list(expected), f"{name}: key order differs"
    assert ours == golden


REFUSED_BY_RULE = sorted(
    path.stem for path in GOLDENS.glob("*.error") if path.read_text().startswith("ValueError: ")
)


@pytest.mark.usefixtures("in_corpus")
@pytest.mark.parametrize("name", REFUSED_BY_RULE)
def test_files_the_published_sdk_refuses_are_refused_too(name: str) -> None:
    """The template rules refuse the same files: a revision inside engine_args, or none at all
    (0.6.9 would look the current commit up on Hugging Face, which tests cannot reach; we always
    ask for it)."""
    with pytest.raises(ChuteLoadError, match=r"[Rr]evision"):
        load_chute(f"{name}:chute")
