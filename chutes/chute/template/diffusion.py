"""The diffusion template: a text-to-image chute on diffusers (spec 9.4).

`model_name_or_url` is a Hugging Face model id (loaded as SDXL, falling back to SD) or a CivitAI
model URL (`https://civitai.com/models/<id>`, optionally pinned with `version`), downloaded into
`$CIVITAI_HOME` and loaded as a single file. The one cord, `/generate`, returns a JPEG.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

import httpx
from fastapi import Response
from pydantic import BaseModel, Field

from chutes.chute.base import Chute, ChutePack
from chutes.chute.node_selector import NodeSelector
from chutes.image import Image
from chutes.image.standard.diffusion import DIFFUSION

CIVITAI_PREFIX: Final = "https://civitai.com/models/"
JPEG_QUALITY: Final = 85


class GenerationInput(BaseModel):
    prompt: str
    negative_prompt: str = ""
    height: int = Field(default=1024, ge=128, le=2048)
    width: int = Field(default=1024, ge=128, le=2048)
    num_inference_steps: int = Field(default=25, ge=1, le=50)
    guidance_scale: float = Field(default=7.5, ge=1.0, le=20.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)


class MinifiedGenerationInput(BaseModel):
    prompt: str = "a beautiful mountain landscape"


class DiffusionChute(ChutePack):
    """A diffusion chute and its cord callable."""

    generate: Callable[..., Any]


def civitai_model_id(model_name_or_url: str) -> str | None:
    """The CivitAI model id of a `https://civitai.com/models/<id>[/slug]` URL, else None."""
    if not model_name_or_url.lower().startswith(CIVITAI_PREFIX):
        return None
    return urlparse(model_name_or_url).path.split("/")[2]


def _civitai_home() -> Path:
    return Path(os.getenv("CIVITAI_HOME", os.path.expanduser("~/.cache/civitai")))


async def _download_civitai(model_id: str, version: str | None) -> Path:
    """The model file, downloaded into $CIVITAI_HOME unless already there."""
    home = _civitai_home()
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=30.0), follow_redirects=True) as client:
        if version is None:
            info = await client.get(f"https://civitai.com/api/v1/models/{model_id}")
            info.raise_for_status()
            version = str(info.json()["modelVersions"][0]["id"])
        target = home / f"{model_id}-{version}.safetensors"
        if await asyncio.to_thread(target.exists):
            return target
        await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        async with client.stream("GET", f"https://civitai.com/api/download/models/{version}") as response:
            response.raise_for_status()
            handle = await asyncio.to_thread(partial.open, "wb")
            try:
                async for chunk in response.aiter_bytes(1 << 20):
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                handle.close()
        await asyncio.to_thread(partial.rename, target)
        return target


def _load_pipeline(source: str, revision: str | None, pipeline_args: dict[str, Any]) -> Any:
    """An SDXL pipeline for a Hugging Face model, or SD when it is not SDXL, in fp16 on the GPU."""
    torch = importlib.import_module("torch")
    diffusers = importlib.import_module("diffusers")
    options = {"torch_dtype": torch.float16, **pipeline_args}
    if revision:
        options["revision"] = revision
    errors: list[str] = []
    for name in ("StableDiffusionXLPipeline", "StableDiffusionPipeline"):
        try:
            return getattr(diffusers, name).from_pretrained(source, **options).to("cuda")
        except Exception as error:
            errors.append(f"{name}: {error}")
    raise RuntimeError(f"could not load {source}: " + "; ".join(errors))


# The Hugging Face repositories single-file checkpoints borrow missing components from.
_BASE_MODELS: Final = {
    "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", "madebyollin/sdxl-vae-fp16-fix"),
    "sd": ("runwayml/stable-diffusion-v1-5", "stabilityai/sd-vae-ft-mse"),
}


def _looks_like_sdxl(model_path: str) -> bool | None:
    """True/False from the checkpoint's tensor names (SDXL has a second text encoder); None when
    the file cannot be read as safetensors."""
    try:
        safetensors = importlib.import_module("safetensors")
        with safetensors.safe_open(model_path, framework="pt", device="cpu") as handle:
            keys = list(handle.keys())
    except Exception:
        return None
    return any(key.startswith("conditioner.embedders.1") or "text_model_2" in key for key in keys)


def single_file_pipeline(model_path: str, model_type: str = "auto") -> Any:
    """A fp16 CUDA pipeline from one checkpoint file (e.g. a CivitAI download).

    `model_type` is "sdxl", "sd" or "auto" (guess from the tensors, SDXL when unsure, then try the
    other). A checkpoint lacking components is completed from the base model of its type: first
    the UNet and text encoders/tokenizers, then also the VAE.
    """
    if model_type == "auto":
        primary = "sd" if _looks_like_sdxl(model_path) is False else "sdxl"
        secondary = "sdxl" if primary == "sd" else "sd"
        try:
            return single_file_pipeline(model_path, primary)
        except Exception:
            return single_file_pipeline(model_path, secondary)

    torch = importlib.import_module("torch")
    diffusers = importlib.import_module("diffusers")
    transformers = importlib.import_module("transformers")
    sdxl = model_type == "sdxl"
    pipeline_class = diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    base_model, vae_model = _BASE_MODELS["sdxl" if sdxl else "sd"]
    fp16 = {"torch_dtype": torch.float16}

    def load(**components: Any) -> Any:
        return pipeline_class.from_single_file(model_path, **components, use_safetensors=True, **fp16)

    def base_components() -> dict[str, Any]:
        components = {
            "unet": diffusers.UNet2DConditionModel.from_pretrained(
                base_model, subfolder="unet", variant="fp16", **fp16
            ),
            "tokenizer": transformers.CLIPTokenizer.from_pretrained(base_model, subfolder="tokenizer"),
            "text_encoder": transformers.CLIPTextModel.from_pretrained(
                base_model, subfolder="text_encoder", **fp16
            ),
        }
        if sdxl:
            components["tokenizer_2"] = transformers.CLIPTokenizer.from_pretrained(
                base_model, subfolder="tokenizer_2"
            )
            components["text_encoder_2"] = transformers.CLIPTextModelWithProjection.from_pretrained(
                base_model, subfolder="text_encoder_2", **fp16
            )
        return components

    try:
        pipeline = load()
    except Exception:
        components = base_components()
        try:
            pipeline = load(**components)
        except Exception:
            components["vae"] = diffusers.AutoencoderKL.from_pretrained(vae_model, **fp16)
            pipeline = load(**components)
    return pipeline.to("cuda")


def _render(pipeline: Any, params: GenerationInput) -> bytes:
    torch = importlib.import_module("torch")
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device="cuda").manual_seed(params.seed)
    with torch.inference_mode():
        result = pipeline(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            height=params.height,
            width=params.width,
            num_inference_steps=params.num_inference_steps,
            guidance_scale=params.guidance_scale,
            generator=generator,
        )
    buffer = io.BytesIO()
    result.images[0].save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def build_diffusion_chute(
    username: str,
    name: str,
    model_name_or_url: str,
    node_selector: NodeSelector,
    tagline: str = "",
    readme: str = "",
    concurrency: int = 3,
    version: str | None = None,
    revision: str | None = None,
    image: str | Image = DIFFUSION,
    pipeline_args: dict[str, Any] | None = None,
    max_instances: int = 1,
    scaling_threshold: float = 0.75,
    shutdown_after_seconds: int = 300,
    tee: bool = False,
) -> DiffusionChute:
    """A chute named `name` generating images with `model_name_or_url`."""
    chute = Chute(
        username=username,
        name=name,
        tagline=tagline,
        readme=readme,
        image=image,
        node_selector=node_selector,
        concurrency=concurrency,
        standard_template="diffusion",
        # Not the chute's revision: the published template only pins the download with it, and
        # sends null at deploy (the API reads a chute's revision as a model commit to verify).
        max_instances=max_instances,
        scaling_threshold=scaling_threshold,
        shutdown_after_seconds=shutdown_after_seconds,
        tee=tee,
    )
    args = dict(pipeline_args or {})
    state: dict[str, Any] = {}

    @chute.on_startup()
    async def initialize_pipeline(self: Chute) -> None:
        model_id = civitai_model_id(model_name_or_url)
        if model_id is not None:
            path = await _download_civitai(model_id, version)
            state["pipeline"] = await asyncio.to_thread(single_file_pipeline, str(path))
        else:
            state["pipeline"] = await asyncio.to_thread(_load_pipeline, model_name_or_url, revision, args)

    @chute.cord(
        public_api_path="/generate",
        public_api_method="POST",
        input_schema=GenerationInput,
        minimal_input_schema=MinifiedGenerationInput,
        output_content_type="image/jpeg",
    )
    async def generate(self: Chute, params: GenerationInput) -> Response:
        """Generate one image (JPEG) from the prompt."""
        # Rendering blocks for seconds: keep it off the event loop serving other requests.
        content = await asyncio.to_thread(_render, state["pipeline"], params)
        return Response(
            content=content,
            media_type="image/jpeg",
            headers={"Content-Disposition": f'attachment; filename="{uuid.uuid4()}.jpg"'},
        )

    return DiffusionChute(chute=chute, generate=generate)
