"""What the engine templates share (spec 9): argument checks, the engine command line pieces, and
the startup steps that run inside an instance (download the model, launch the engine, wait for it,
warm it up, check that it enforces its API key).

The startup steps need the instance's GPU stack (huggingface_hub, vllm/sglang, diffusers); they
are imported only when a hook runs, so building a template chute anywhere else needs none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import random
import re
import shlex
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import httpx

# The published SDK's mTLS helpers live here too (chute files import them from this module).
from chutes.chute.template.mtls import build_client_ssl_context as build_client_ssl_context
from chutes.chute.template.mtls import build_wrong_client_ssl_context as build_wrong_client_ssl_context
from chutes.chute.template.mtls import force_exit as force_exit
from chutes.chute.template.mtls import generate_mtls_certs as generate_mtls_certs
from chutes.chute.template.mtls import ipaddress_from_string as ipaddress_from_string
from chutes.chute.template.mtls import monitor_engine as monitor_engine
from chutes.chute.template.mtls import mtls_enabled as mtls_enabled
from chutes.chute.template.mtls import set_encrypted_env_var as set_encrypted_env_var
from chutes.chute.template.mtls import validate_mtls as validate_mtls

if TYPE_CHECKING:
    from chutes.chute.base import Chute

logger = logging.getLogger(__name__)

#: Where a template's engine listens inside the instance; its passthrough cords point there.
ENGINE_HOST: Final = "127.0.0.1"
ENGINE_PORT: Final = 10101
ENGINE_URL: Final = f"http://{ENGINE_HOST}:{ENGINE_PORT}"

#: Model download attempts and the pause between them, in seconds.
DOWNLOAD_ATTEMPTS: Final = 5
DOWNLOAD_RETRY_SECONDS: Final = 60.0

# Compilation caches of the engines; pointed next to the model so they persist with it.
CACHE_DIR_VARIABLES: Final = (
    "TRITON_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "FLASHINFER_WORKSPACE_BASE",
    "XFORMERS_CACHE_DIR",
    "DG_JIT_CACHE_DIR",
    "SGL_DG_CACHE_DIR",
    "SGLANG_DG_CACHE_DIR",
    "VLLM_CACHE_ROOT",
    "SGLANG_CACHE_DIR",
)

_WARMUP_TOPICS: Final = ("apples", "bananas", "grapes", "raspberries", "dogs", "cats", "goats", "zebras")


# ---- building --------------------------------------------------------------------------------


#: Engine arguments: one command-line string, or a dict of options (`{"max_model_len": 16384,
#: "enforce_eager": True}`), which is what the platform's easy-deploy code passes.
EngineArgs = str | Mapping[str, Any] | None


def split_args(engine_args: EngineArgs) -> list[str]:
    """Engine arguments as a list of command-line words.

    A string is split like a shell would. A dict becomes `--option value` per key, underscores
    turned to dashes: True is the bare flag, False and None leave the option out, a list repeats
    its values after one flag. (The published SDK takes a dict at import and then fails at the
    engine's start; this is what such a chute means.)"""
    if engine_args is None or isinstance(engine_args, str):
        return shlex.split(engine_args or "")
    words: list[str] = []
    for key, value in engine_args.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            words += [flag, *(str(item) for item in value)]
        elif isinstance(value, Mapping):
            words += [flag, json.dumps(value)]
        else:
            words += [flag, str(value)]
    return words


def has_flag(args: Iterable[str], *flags: str) -> bool:
    """True when any of `flags` appears as `--flag value` or `--flag=value`."""
    return any(arg == flag or arg.startswith(flag + "=") for arg in args for flag in flags)


def count_flags(args: Iterable[str], *flags: str) -> int:
    """How many times any of `flags` appears."""
    return sum(1 for arg in args for flag in flags if arg == flag or arg.startswith(flag + "="))


def require_revision(
    builder: str, revision: str | None, engine_args: EngineArgs, model_name: str | None = None
) -> str:
    """LLM templates pin the model to a Hugging Face commit: `revision` is mandatory and must not
    also come through `engine_args`. Without one, the error suggests the model's current main
    commit when Hugging Face can be reached (as the published SDK does)."""
    if has_flag(split_args(engine_args), "--revision"):
        raise ValueError(f"Revision is now a top-level argument to {builder}!")
    if not revision:
        suggested = None
        if model_name:
            with contextlib.suppress(Exception):
                suggested = get_current_hf_commit(model_name, timeout=10)
        hint = (
            f"The current refs/heads/main commit is: {suggested}"
            if suggested
            else "(the commit hash of the model repository, e.g. its current refs/heads/main)."
        )
        raise ValueError(
            f"You must specify revision= to properly lock a model to a given huggingface revision {hint}"
        )
    return revision


def forbid_flags(engine_args: EngineArgs, flags: Mapping[str, str]) -> None:
    """ValueError naming the first flag of `flags` (flag -> reason) present in `engine_args`."""
    args = split_args(engine_args)
    for flag, reason in flags.items():
        if has_flag(args, flag):
            raise ValueError(f"{flag} is not allowed in engine_args: {reason}")


def gpu_count(chute: Chute) -> int:
    """GPUs the engine spreads over: `CUDA_DEVICE_COUNT` when the instance sets it, else the
    chute's node selector."""
    from_env = os.getenv("CUDA_DEVICE_COUNT")
    if from_env:
        return int(from_env)
    return chute.node_selector.gpu_count if chute.node_selector else 1


# ---- startup steps (inside an instance) ----------------------------------------------------------


def set_default_cache_dirs(download_path: str) -> None:
    """Point unset engine cache variables under the model's download directory."""
    for key in CACHE_DIR_VARIABLES:
        if not os.getenv(key):
            os.environ[key] = os.path.join(download_path, f"_{key.lower()}")


async def download_model(model_name: str, revision: str | None) -> str:
    """Download (or find in the cache) the model snapshot; its local path."""
    try:
        hub = importlib.import_module("huggingface_hub")
    except ImportError as error:
        raise RuntimeError("the template needs huggingface_hub in the image to download models") from error
    options = {"revision": revision} if revision else {}
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            logger.info("downloading %s %s (attempt %d)", model_name, options, attempt)
            path: str = await asyncio.to_thread(hub.snapshot_download, repo_id=model_name, **options)
            return path
        except Exception as error:
            logger.error("failed downloading %s: %s", model_name, error)
        if attempt < DOWNLOAD_ATTEMPTS:
            await asyncio.sleep(DOWNLOAD_RETRY_SECONDS)
    raise RuntimeError(f"Failed to download {model_name} after {DOWNLOAD_ATTEMPTS} attempts")


async def launch_engine(
    chute: Chute, command: list[str], env: Mapping[str, str]
) -> asyncio.subprocess.Process:
    """Start the engine process; a shutdown hook stops it with the chute."""
    logger.info("launching engine: %s", shlex.join(command))
    process = await asyncio.create_subprocess_exec(*command, env=dict(env))

    @chute.on_shutdown(priority=90)
    async def stop_engine(self: Chute) -> None:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()

    return process


async def start_engine(
    chute: Chute,
    model_name: str,
    revision: str,
    command_for: Callable[[str], list[str]],
    env: Mapping[str, str],
) -> str:
    """What every engine template's startup does: fetch the pinned model, launch the engine with a
    fresh API key (`command_for(key)` builds its command line), wait until it serves, and route
    the chute's passthrough cords to it with that key. Returns the key."""
    download_path = await download_model(model_name, revision)
    set_default_cache_dirs(download_path)
    api_key = str(uuid.uuid4())
    process = await launch_engine(chute, command_for(api_key), env)
    await wait_for_engine(process, api_key)
    chute.passthrough_headers["Authorization"] = f"Bearer {api_key}"
    return api_key


async def wait_for_engine(process: asyncio.subprocess.Process, api_key: str | None) -> None:
    """Poll `GET /v1/models` every second until the engine answers 200; fail if it exits first."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=ENGINE_URL, timeout=10.0) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"engine exited with code {process.returncode} during startup")
            try:
                response = await client.get("/v1/models", headers=headers)
                if response.status_code == 200:
                    logger.info("engine is up")
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1)


async def prompt_one(
    model_name: str,
    base_url: str = ENGINE_URL,
    prompt: str | None = None,
    api_key: str | None = None,
    require_status: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    """One `/v1/completions` call to the engine at `base_url`; the generated text (None on 400),
    or the body when `require_status` is given and matched. Parameters as in the published SDK,
    whose chute files call it positionally."""
    prompt = prompt or (
        "They started to tell a long, extraordinarily detailed and verbose story about "
        + random.choice(_WARMUP_TOPICS)
    )
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=None, verify=ssl_context or True) as client:
        response = await client.post(
            "/v1/completions",
            json={"model": model_name, "prompt": prompt, "max_tokens": 1000},
            headers=headers,
        )
    if require_status is not None:
        if response.status_code != require_status:
            raise RuntimeError(
                f"expected status {require_status} from the engine, got {response.status_code}"
            )
        return response.json()
    if response.status_code == 400:
        return None
    response.raise_for_status()
    return response.json()["choices"][0]["text"]


async def warmup_model(
    chute: Chute,
    base_url: str = ENGINE_URL,
    api_key: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Prompts at full concurrency, then three rounds of growing context, so the first users do not
    pay for graph compilation and cache allocation."""

    async def one(prompt: str | None = None) -> Any:
        return await prompt_one(
            chute.name, base_url=base_url, prompt=prompt, api_key=api_key, ssl_context=ssl_context
        )

    responses = await asyncio.gather(*(one() for _ in range(chute.concurrency)))
    combined = "\n\n".join(str(text) for text in responses if text) + "\n\n"
    for multiplier in range(1, 4):
        prompt = "Summarize the following stories:\n\n" + combined * multiplier + "\nThe summary is:"
        responses = await asyncio.gather(*(one(prompt) for _ in range(chute.concurrency)))
        if not all(responses):
            logger.warning("warmup stopped at context multiplier %d", multiplier)
            break
    if not await one():
        raise RuntimeError("the engine failed a prompt after warmup")


async def validate_auth(
    chute: Chute,
    base_url: str = ENGINE_URL,
    api_key: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """The engine must answer with its key and refuse (401) without it or with another one: the
    passthrough is the only way in. Without a key (or the string "None") only the first holds."""
    options: dict[str, Any] = {"base_url": base_url, "ssl_context": ssl_context}
    if not api_key or api_key == "None":
        await prompt_one(chute.name, api_key="None", **options)
        return
    await prompt_one(chute.name, api_key=api_key, **options)
    await prompt_one(chute.name, api_key=None, require_status=401, **options)
    await prompt_one(chute.name, api_key=str(uuid.uuid4()), require_status=401, **options)


def set_nccl_flags(gpu_count: int, model_name: str) -> None:
    """On multi-GPU nodes of the classes that have NVLink/InfiniBand (matched in the name given,
    usually the GPU model), drop variables that would turn NCCL's P2P and IB transports off."""
    if gpu_count > 1 and re.search(
        "h[12]0|b[23]00|5090|l40s|6000 ada|a100|h800|pro 6000|sxm", model_name, re.I
    ):
        for key in ("NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "NCCL_NET_GDR_LEVEL"):
            os.environ.pop(key, None)


def get_current_hf_commit(model_name: str, *, timeout: float = 30) -> str | None:
    """The commit refs/heads/main of a Hugging Face model points at now (what to pin `revision`
    to), or None when the repository has no main branch. Needs network access."""
    try:
        hub = importlib.import_module("huggingface_hub")
    except ImportError:
        response = httpx.get(f"https://huggingface.co/api/models/{model_name}/refs", timeout=timeout)
        response.raise_for_status()
        for branch in response.json().get("branches", []):
            if branch.get("ref") == "refs/heads/main":
                return str(branch["targetCommit"])
        return None
    for ref in hub.HfApi().list_repo_refs(model_name).branches:
        if ref.ref == "refs/heads/main":
            return str(ref.target_commit)
    return None


def parse_stream_chunk(encoded_chunk: str | bytes) -> Any:
    """The JSON of one `data: {...}` SSE line of an engine stream, or None for other lines."""
    chunk = encoded_chunk if isinstance(encoded_chunk, str) else encoded_chunk.decode()
    if "data: {" in chunk:
        return json.loads(chunk[chunk.index("data: {") + 6 :])
    return None


async def get_models(data):  # type: ignore[no-untyped-def]
    """Post-processor of the `/v1/models` passthrough cords: the upstream answer as is.

    Deliberately unannotated: the schema extractor lists annotated parameters as inputs, and the
    upstream answer is not an input (the real templates' cord has an empty input schema).
    """
    return data
