"""Easy deploys (spec/chutes-api.md 4.19 and 4.20, POST /chutes/vllm and /chutes/diffusion): a
chute built from the SDK's own templates for a model, then deployed through the normal pipeline.

The real API answers 403 ("Easy deployment is currently disabled!"); this suite deploys, as its
dormant code would:
- the body is validated as the real VLLMChuteArgs / DiffusionChuteArgs (422, every problem);
- the image is the newest registered image named after the template ("vllm", "diffusion"),
  "built and pushed", public or the caller's, and no nightly, dev or rc tag;
- the code is a chute file calling `build_vllm_chute` / `build_diffusion_chute` with the request's
  values; it is run here (it is ours, generated from validated values) so that the template's own
  cords go into the deploy, exactly as `chutes deploy` would send them;
- without Hugging Face, nothing guesses the hardware from the model's size: the node selector is
  the request's, else 1 GPU with >= 80 GB (vLLM; the real fallback) or >= 24 GB (diffusion); and
  a vLLM chute needs `revision`, which the real API would fetch from Hugging Face (400 says so);
- the deploy then runs every rule of `POST /chutes/` with the fee accepted (the easy routes take
  no `accept_fee`), on file `chute.py`, ref `chute:chute`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pydantic
import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from chutes.chute import Chute
from chutes.registry.v1 import registry_pb2
from services.kit.caller import Caller
from services.kit.errors import FieldViolation, InvalidArgument, ValidationFailed, out_of_range
from services.registry.deploy import deploy
from services.registry.deploy.request import REVISION_PATTERN, node_selector_of
from services.registry.models import images

MODEL_PATTERN = re.compile(r"^[a-zA-Z0-9_\.-]+/[a-zA-Z0-9_\.-]+$")
CIVITAI_PATTERN = re.compile(r"^https://civitai\.com/models/\d+(/.*)?$")
DIFFUSION_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_\. -/]+$")
MAX_MODEL_LEN = 16384
#: Default hardware when the request names none (see the module).
VLLM_SELECTOR = {"gpu_count": 1, "min_vram_gb_per_gpu": 80}
DIFFUSION_SELECTOR = {"gpu_count": 1, "min_vram_gb_per_gpu": 24}
_UNSTABLE_TAG = re.compile(r"nightly|dev|rc", re.IGNORECASE)


def _pattern(loc: str, value: str, pattern: re.Pattern[str]) -> FieldViolation | None:
    if pattern.match(value):
        return None
    return FieldViolation(
        ("body", loc), f"String should match pattern '{pattern.pattern}'", "string_pattern_mismatch"
    )


def _selector(
    request: registry_pb2.VllmChuteArgs | registry_pb2.DiffusionChuteArgs, default: dict[str, int]
) -> tuple[dict[str, Any], list[FieldViolation]]:
    """The node selector to deploy with, and its problems (pydantic's, as FastAPI reports them)."""
    if not request.HasField("node_selector"):
        return dict(default), []
    try:
        return node_selector_of(registry_pb2.ChuteArgs(node_selector=request.node_selector)).dict(), []
    except pydantic.ValidationError as invalid:
        return {}, [
            FieldViolation(("body", "node_selector", *e["loc"]), e["msg"], e["type"])
            for e in invalid.errors()
        ]


def _required(name: str) -> FieldViolation:
    return FieldViolation(("body", name), "Field required", "missing")


def _model(model: str) -> FieldViolation | None:
    return _pattern("model", model, MODEL_PATTERN) if model else _required("model")


def _concurrency(
    request: registry_pb2.VllmChuteArgs | registry_pb2.DiffusionChuteArgs,
) -> list[FieldViolation]:
    if not request.HasField("concurrency"):
        return []
    return out_of_range((("body", "concurrency"), request.concurrency, 1, 256))


def _check(problems: Sequence[FieldViolation | None]) -> None:
    found = [p for p in problems if p is not None]
    if found:
        raise ValidationFailed(found)


async def newest_image(connection: AsyncConnection, template: str, caller: Caller) -> RowMapping:
    """The newest usable image of a template; 400 naming what to register when there is none."""
    query = (
        sa.select(images)
        .where(
            sa.func.lower(images.c.name) == template,
            images.c.status == "built and pushed",
            sa.or_(images.c.public.is_(True), images.c.user_id == caller.user_id),
        )
        .order_by(images.c.created_at.desc())
    )
    for row in (await connection.execute(query)).mappings():
        if not _UNSTABLE_TAG.search(row["tag"]):
            return row
    raise InvalidArgument(
        f"No {template} image is registered here (public or yours, built, not nightly/dev/rc): an "
        f"operator registers one with `chutes-suite admin add-image --name {template} --public ...`"
    )


def _built(code: str) -> Chute:
    """Run the generated chute file and take its chute (the template's ChutePack holds it)."""
    namespace: dict[str, Any] = {"__name__": "chute"}
    try:
        exec(compile(code, "chute.py", "exec"), namespace)  # our own code, from validated values
    except ValueError as refused:  # the template's own checks (engine args, revision)
        raise InvalidArgument(str(refused)) from None
    chute: Chute = namespace["chute"].chute
    return chute


def _deploy_args(
    caller: Caller, chute: Chute, code: str, request: Any, image_id: str
) -> registry_pb2.ChuteArgs:
    """The deploy body `chutes deploy` would send for the built chute."""
    assert chute.node_selector is not None
    body = {
        "name": chute.name,
        "tagline": chute.tagline,
        "readme": chute.readme,
        "logo_id": request.logo_id if request.HasField("logo_id") else None,
        "tool_description": request.tool_description if request.HasField("tool_description") else None,
        "image": image_id,
        "public": request.public if request.HasField("public") else True,
        "standard_template": chute.standard_template,
        "node_selector": chute.node_selector.dict(),
        "filename": "chute.py",
        "ref_str": "chute:chute",
        "code": code,
        "concurrency": chute.concurrency,
        "revision": chute.revision,
        "lock_modules": True,
        "cords": [cord.to_dict() for cord in chute.cords],
    }
    return json_format.ParseDict(body, registry_pb2.ChuteArgs(), ignore_unknown_fields=True)


async def deploy_vllm(
    connection: AsyncConnection, caller: Caller, request: registry_pb2.VllmChuteArgs
) -> str:
    selector, problems = _selector(request, VLLM_SELECTOR)
    engine = request.engine_args
    found: list[FieldViolation | None] = [*problems, _model(request.model)]
    if request.HasField("revision"):
        found.append(_pattern("revision", request.revision, REVISION_PATTERN))
    if engine.HasField("tokenizer"):
        found.append(_pattern("tokenizer", engine.tokenizer, MODEL_PATTERN))
    if engine.HasField("max_model_len"):
        found += out_of_range(
            (("body", "engine_args", "max_model_len"), engine.max_model_len, 1, MAX_MODEL_LEN)
        )
    _check([*found, *_concurrency(request)])
    if not request.HasField("revision"):
        raise InvalidArgument(
            f"revision is required: this suite does not reach Hugging Face to resolve the current "
            f"main commit of {request.model}; pass the 40-hex commit to deploy"
        )
    image = await newest_image(connection, "vllm", caller)
    flags = [f"--max-model-len {engine.max_model_len if engine.HasField('max_model_len') else MAX_MODEL_LEN}"]
    if engine.HasField("tokenizer"):
        flags.append(f"--tokenizer {engine.tokenizer}")
    if engine.enforce_eager:
        flags.append("--enforce-eager")
    if not engine.HasField("trust_remote_code") or engine.trust_remote_code:
        flags.append("--trust-remote-code")
    # Every value enters the code as a Python literal (repr), whatever characters it holds.
    code = f"""{f"{request.model} on vLLM (POST /chutes/vllm)."!r}

from chutes.chute import NodeSelector
from chutes.chute.template.vllm import build_vllm_chute

chute = build_vllm_chute(
    username={caller.username!r},
    model_name={request.model!r},
    revision={request.revision!r},
    image={image["image_id"]!r},
    node_selector=NodeSelector(**{selector!r}),
    concurrency={request.concurrency if request.HasField("concurrency") else 8},
    engine_args={" ".join(flags)!r},
    tagline={request.tagline!r},
    readme={request.readme!r},
)
"""
    args = _deploy_args(caller, _built(code), code, request, image["image_id"])
    return await deploy(connection, caller, args, accept_fee=True)


async def deploy_diffusion(
    connection: AsyncConnection, caller: Caller, request: registry_pb2.DiffusionChuteArgs
) -> str:
    selector, problems = _selector(request, DIFFUSION_SELECTOR)
    found: list[FieldViolation | None] = [*problems, *_concurrency(request)]
    if not request.model:
        found.append(_required("model"))
    elif not (MODEL_PATTERN.match(request.model) or CIVITAI_PATTERN.match(request.model)):
        found.append(
            FieldViolation(
                ("body", "model"),
                "Must be a Hugging Face model (org/name) or a Civitai model URL",
                "value_error",
            )
        )
    found.append(
        _pattern("name", request.name, DIFFUSION_NAME_PATTERN) if request.name else _required("name")
    )
    _check(found)
    image = await newest_image(connection, "diffusion", caller)
    code = f"""{f"{request.name}: images from {request.model} (POST /chutes/diffusion)."!r}

from chutes.chute import NodeSelector
from chutes.chute.template.diffusion import build_diffusion_chute

chute = build_diffusion_chute(
    username={caller.username!r},
    name={request.name!r},
    model_name_or_url={request.model!r},
    image={image["image_id"]!r},
    node_selector=NodeSelector(**{selector!r}),
    concurrency={request.concurrency if request.HasField("concurrency") else 1},
    tagline={request.tagline!r},
    readme={request.readme!r},
)
"""
    args = _deploy_args(caller, _built(code), code, request, image["image_id"])
    return await deploy(connection, caller, args, accept_fee=True)
