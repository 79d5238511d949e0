"""What a chute file written for the published `chutes` 0.6.9 imports and calls works with ours
(issue 15): the names exist with the published signatures, and what 0.6.9 accepts at import is
accepted here too (with a warning naming the fix where the platform would refuse it later).
Deploy bodies are compared byte for byte in tests/test_sdk_corpus.py."""

from __future__ import annotations

import inspect
import json
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from chutes.chute import Chute, NodeSelector
from chutes.chute.job import Port
from chutes.cli.api import CommandError
from chutes.cli.deploy import deploy_body
from chutes.image import Image
from chutes.runner import load_chute


def test_published_import_lines_work() -> None:
    # Each line as chute files and the SDK reference write it.
    from chutes.chute.template import (
        build_diffusion_chute,
        build_embedding_chute,
        build_sglang_chute,
        build_vllm_chute,
    )
    from chutes.chute.template.diffusion import single_file_pipeline
    from chutes.chute.template.sglang import ChatCompletionRequest, CompletionRequest
    from chutes.exception import AuthenticationRequired, DuplicatePath, InvalidPath, NotConfigured
    from chutes.image import ADD, APT, ENTRYPOINT, ENV, FROM, MAINTAINER, RUN, USER, WORKDIR
    from chutes.image.directive import BaseDirective, DirectiveType
    from chutes.image.directive.add import ADD as ADD2
    from chutes.image.directive.apt import APT as APT2
    from chutes.image.directive.base_image import FROM as FROM2
    from chutes.image.directive.entrypoint import ENTRYPOINT as ENTRYPOINT2
    from chutes.image.directive.env import ENV as ENV2
    from chutes.image.directive.generic_run import RUN as RUN2
    from chutes.image.directive.maintainer import MAINTAINER as MAINTAINER2
    from chutes.image.directive.user import USER as USER2
    from chutes.image.directive.workdir import WORKDIR as WORKDIR2
    from chutes.util.hf import CacheVerificationError, purge_model_cache, verify_cache
    from chutes.util.schema import SchemaExtractor

    assert (ADD, APT, ENTRYPOINT, ENV, FROM, MAINTAINER, RUN, USER, WORKDIR) == (
        ADD2,
        APT2,
        ENTRYPOINT2,
        ENV2,
        FROM2,
        MAINTAINER2,
        RUN2,
        USER2,
        WORKDIR2,
    )
    assert all(issubclass(cls, BaseDirective) for cls in (ADD, APT, ENTRYPOINT, ENV, FROM, RUN))
    assert DirectiveType.RUN.value == "RUN"
    assert all(
        callable(f)
        for f in (
            build_vllm_chute,
            build_sglang_chute,
            build_embedding_chute,
            build_diffusion_chute,
            single_file_pipeline,
            verify_cache,
            purge_model_cache,
        )
    )
    assert issubclass(ChatCompletionRequest, BaseModel) and issubclass(CompletionRequest, BaseModel)
    assert issubclass(InvalidPath, ValueError) and issubclass(DuplicatePath, ValueError)
    assert issubclass(AuthenticationRequired, RuntimeError) and issubclass(NotConfigured, RuntimeError)
    assert CacheVerificationError("x", reason="not_found").to_dict()["reason"] == "not_found"
    assert SchemaExtractor.PYTHON_TYPE_TO_JSON_TYPE[int] == {"type": "integer"}
    assert SchemaExtractor._get_schema_for_type(list[str], {}) == {
        "type": "array",
        "items": {"type": "string"},
    }


def test_helpers_have_the_published_functions_and_parameters() -> None:
    from chutes.chute.template import helpers

    for name in (
        "force_exit",
        "set_encrypted_env_var",
        "mtls_enabled",
        "get_current_hf_commit",
        "generate_mtls_certs",
        "ipaddress_from_string",
        "build_client_ssl_context",
        "build_wrong_client_ssl_context",
        "validate_mtls",
        "set_nccl_flags",
        "monitor_engine",
        "set_default_cache_dirs",
    ):
        assert callable(getattr(helpers, name)), name
    # Positional order matters: published chute code calls prompt_one(name, base_url, prompt).
    assert list(inspect.signature(helpers.prompt_one).parameters) == [
        "model_name",
        "base_url",
        "prompt",
        "api_key",
        "require_status",
        "ssl_context",
    ]
    for func in (helpers.warmup_model, helpers.validate_auth):
        assert list(inspect.signature(func).parameters) == ["chute", "base_url", "api_key", "ssl_context"]
    assert list(inspect.signature(helpers.monitor_engine).parameters)[:4] == [
        "process",
        "api_key",
        "ready_event",
        "port",
    ]


def test_mtls_certificates_make_working_client_contexts() -> None:
    from chutes.chute.template.helpers import (
        build_client_ssl_context,
        build_wrong_client_ssl_context,
        generate_mtls_certs,
    )

    certs = generate_mtls_certs()
    for key in ("ca_cert", "server_cert", "server_key", "client_cert", "client_key", "wrong_client_key"):
        assert Path(certs[f"{key}_file"]).read_bytes() == certs[f"{key}_pem"]
    assert b"ENCRYPTED" in certs["client_key_pem"]
    build_client_ssl_context(
        certs["ca_cert_file"], certs["client_cert_file"], certs["client_key_file"], certs["password"]
    )
    build_wrong_client_ssl_context(
        certs["ca_cert_file"],
        certs["wrong_client_cert_file"],
        certs["wrong_client_key_file"],
        certs["password"],
    )


def test_directives_render_as_published() -> None:
    from chutes.image.directive.add import ADD
    from chutes.image.directive.apt import APT
    from chutes.image.directive.entrypoint import ENTRYPOINT

    assert str(APT.update()) == "RUN apt-get update"
    assert str(APT.install(["git", "curl"])) == "RUN apt-get -y install git curl"
    assert str(APT.remove("vim")) == "RUN apt-get -y remove vim"
    assert str(ENTRYPOINT("python")) == 'ENTRYPOINT ["python"]'
    assert str(ADD("https://example.com/x.tgz", "/x", chown="1000:1000")) == (
        "ADD --chown=1000:1000 https://example.com/x.tgz /x"
    )
    image = Image(username="u", name="n", tag="t").run_command("echo hi")
    assert [type(d).__name__ for d in image._directives] == ["FROM", "RUN"]


def test_two_part_python_version_warns_with_the_fix() -> None:
    with pytest.warns(UserWarning, match=r"with_python\('3.11.11'\)"):
        image = Image(username="u", name="n", tag="t").with_python("3.11")
    assert "RUN wget https://www.python.org/ftp/python/3.11/Python-3.11.tgz" in str(image)


def test_entrypoint_without_arguments_clears_the_base_one() -> None:
    image = Image(username="u", name="n", tag="t").with_entrypoint("python").with_entrypoint()
    assert str(image).splitlines()[-1] == "ENTRYPOINT []"


def test_gpu_names_keep_their_case_in_the_body() -> None:
    selector = NodeSelector(include=["H100", "a100"], exclude=["L40S"])
    assert selector.include == ["h100", "a100"]  # what the services store and match
    assert selector.dict()["include"] == ["H100", "a100"]  # what 0.6.9 sends
    assert selector.dict()["exclude"] == ["L40S"]


def _write_chute(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_unknown_gpu_name_loads_with_a_warning_but_is_refused_by_the_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_chute(
        tmp_path,
        "old_gpus",
        """
        from chutes.chute import Chute, NodeSelector
        chute = Chute(username="u", name="old-gpus", image="u/i:1",
                      node_selector=NodeSelector(include=["rtx4090", "v100", "H100"]))
        """,
    )
    with pytest.warns(UserWarning, match="rtx4090, v100.*refuses"):
        loaded = load_chute("old_gpus:chute")
    assert loaded.chute.node_selector.dict()["include"] == ["rtx4090", "v100", "H100"]
    # Outside a chute file (the services validating a deploy), the name is an error.
    with pytest.raises(ValidationError, match="rtx4090"):
        NodeSelector(include=["rtx4090"])


def test_engine_args_dict_becomes_engine_flags() -> None:
    from chutes.chute.template.vllm import vllm_command

    command = vllm_command(
        "org/model",
        "org/model",
        "a" * 40,
        "key",
        {"max_model_len": 16384, "enforce_eager": False, "trust_remote_code": True},
        1,
    )
    joined = " ".join(command)
    assert "--max-model-len 16384" in joined
    assert "--trust-remote-code" in joined
    assert "enforce" not in joined


def test_port_without_name_and_proto_loads_but_deploy_says_what_to_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.warns(UserWarning, match="needs a name and a proto"):
        Port(port=8080)
    monkeypatch.chdir(tmp_path)
    _write_chute(
        tmp_path,
        "bare_port",
        """
        from chutes.chute import Chute, NodeSelector
        from chutes.chute.job import Port
        chute = Chute(username="u", name="bare-port", image="u/i:1", node_selector=NodeSelector())

        @chute.job(ports=[Port(port=8080)])
        def serve(self, **data):
            return None
        """,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_chute("bare_port:chute")
    with pytest.raises(CommandError, match=r"Port\(name='web', port=8080, proto='http'\)"):
        deploy_body(loaded, public=False)


def test_cord_config_is_the_cli_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import chutes.config

    config_file = tmp_path / "config.ini"
    config_file.write_text("[api]\nbase_url = http://127.0.0.1:9/\n[auth]\nusername = alice\n")
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(config_file))
    monkeypatch.delenv("CHUTES_API_URL", raising=False)
    monkeypatch.setattr(chutes.config, "_loaded", None)
    chute = Chute(username="u", name="cfg", image="u/i:1", node_selector=NodeSelector())

    @chute.cord()
    async def echo(self: Any, text: str) -> str:
        return text

    cord = chute.cords[0]
    assert cord.config.auth.username == "alice"
    assert cord.config.generic.api_base_url == "http://127.0.0.1:9"


def test_diffusion_revision_pins_the_download_not_the_chute() -> None:
    from chutes.chute.template.diffusion import build_diffusion_chute

    pack = build_diffusion_chute(
        username="u",
        name="d",
        model_name_or_url="org/model",
        revision="b" * 40,
        node_selector=NodeSelector(),
    )
    assert pack.chute.revision is None
    assert json.loads(json.dumps(pack.chute.cords[0].to_dict()))["path"] == "/generate"


def test_add_image_records_the_shipped_sdk_version_by_default() -> None:
    """An image added without --chutes-version must not make every deploy on it fail as "SDK
    version (unknown) is too old"."""
    import argparse

    from chutes._version import version
    from suite import admin

    parser = argparse.ArgumentParser()
    admin.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["admin", "add-image", "--username", "u", "--name", "base", "--tag", "1"])
    assert args.chutes_version == version == "0.6.9"
    explicit = parser.parse_args(
        ["admin", "add-image", "--username", "u", "--name", "b", "--tag", "1", "--chutes-version", "0.5.0"]
    )
    assert explicit.chutes_version == "0.5.0"


def test_run_takes_the_published_flags_for_a_local_job(tmp_path: Path) -> None:
    """`chutes run --dev --dev-job-method ... --dev-job-data-path ...` runs the job, and the flags
    the platform's validator adds (miner/validator hotkeys, logging port) are accepted."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    data = tmp_path / "job.json"
    data.write_text(json.dumps({"epochs": 2}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env["RUN_HOOKS_FILE"] = str(tmp_path / "hooks.txt")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "chutes"),
            "run",
            "tests/chute_files/run_jobs:chute",
            "--dev",
            "--dev-job-method",
            "train",
            "--dev-job-data-path",
            str(data),
            "--miner-ss58",
            "5Miner",
            "--validator-ss58",
            "5Validator",
            "--logging-port",
            "8001",
            "--debug",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "complete"
    assert result["result"]["epochs"] == 2


def test_deploy_takes_logo_config_path_and_debug() -> None:
    from chutes.cli.commands import build_parser

    args = build_parser().parse_args(
        ["deploy", "x:chute", "--logo", "logo.png", "--config-path", "/tmp/c.ini", "--debug"]
    )
    assert (args.logo, args.config_path, args.debug) == ("logo.png", "/tmp/c.ini", True)


def test_logo_upload_is_multipart_signed_over_its_bytes(tmp_path: Path) -> None:
    import hashlib

    import httpx
    import sr25519

    from chutes.cli.api import Api
    from chutes.config import Config

    seed = bytes(range(32))
    public, _ = sr25519.pair_from_seed(seed)
    config = Config(
        path=tmp_path / "config.ini",
        file_found=True,
        base_url="http://api.test",
        user_id="u1",
        username="alice",
        hotkey_seed=seed.hex(),
        hotkey_name="hk",
        hotkey_ss58address="5Hotkey",
        api_key=None,
    )
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG fake")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"logo_id": "logo-1"})

    with Api(config) as api:
        api.client = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
        assert api.post_file("/logos/", "logo", logo).json() == {"logo_id": "logo-1"}
    request = seen[0]
    body = request.content
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="logo"; filename="logo.png"' in body and b"\x89PNG fake" in body
    nonce = request.headers["X-Chutes-Nonce"]
    message = f"5Hotkey:{nonce}:{hashlib.sha256(body).hexdigest()}".encode()
    assert sr25519.verify(bytes.fromhex(request.headers["X-Chutes-Signature"]), message, public)


BUILD_FILE = """
from chutes.chute import Chute, NodeSelector
from chutes.image import Image

image = (
    Image(username="Alice", name="app", tag="1.0")
    .run_command("pip install numpy")
    .add("model.txt", "/app/model.txt")
)
chute = Chute(username="Alice", name="app", image=image, node_selector=NodeSelector())
"""


def _chutes_cli(args: list[str], cwd: Path, path: str) -> Any:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env["PATH"] = path
    command = [sys.executable, "-m", "chutes.cli", *args]
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_build_runs_docker_on_the_dockerfile_and_context(tmp_path: Path) -> None:
    (tmp_path / "app_chute.py").write_text(BUILD_FILE)
    (tmp_path / "model.txt").write_text("weights")
    tools = tmp_path / "bin"
    tools.mkdir()
    log = tmp_path / "docker.log"
    # A stand-in docker that records what it was asked to build.
    (tools / "docker").write_text(
        f'#!/bin/sh\necho "$@" > {log}\neval d=\\${{$#}}\ncp "$d/Dockerfile" {tmp_path}/seen.Dockerfile\n'
        f'cp "$d/model.txt" {tmp_path}/seen.model.txt\n'
    )
    (tools / "docker").chmod(0o755)
    done = _chutes_cli(["build", "app_chute:chute", "--public"], tmp_path, f"{tools}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    args = log.read_text().split()
    assert args[:4] == ["build", "--platform=linux/amd64", "-t", "alice/app:1.0"]
    dockerfile = (tmp_path / "seen.Dockerfile").read_text()
    assert dockerfile.splitlines() == [
        "FROM parachutes/python:3.12",
        "RUN pip install numpy",
        "ADD model.txt /app/model.txt",
    ]
    assert (tmp_path / "seen.model.txt").read_text() == "weights"
    assert "chutes-suite admin add-image --username Alice --name app --tag 1.0 --public" in done.stdout


def test_build_without_docker_writes_the_context_and_says_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "app_chute.py").write_text(BUILD_FILE)
    (tmp_path / "model.txt").write_text("weights")
    empty = tmp_path / "nothing"
    empty.mkdir()
    done = _chutes_cli(["build", "app_chute:image"], tmp_path, str(empty))
    assert done.returncode == 0, done.stderr
    context = tmp_path / "chutes-build-app-1.0"
    assert (context / "Dockerfile").read_text().startswith("FROM parachutes/python:3.12\n")
    assert (context / "model.txt").read_text() == "weights"
    assert (
        f"docker build --platform=linux/amd64 -t alice/app:1.0 -f {context}/Dockerfile {context}"
        in done.stdout
    )
    assert "chutes-suite admin add-image --username Alice --name app --tag 1.0" in done.stdout
