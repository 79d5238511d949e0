"""Written for this corpus (not from a public source): Image and NodeSelector calls the published SDK
accepts at import (issue 15): a two-part Python version, GPU names
outside our catalogue and in upper case."""

from pydantic import BaseModel

from chutes.chute import Chute, NodeSelector
from chutes.image import Image

image = (
    Image(username="corpus", name="edge-image", tag="0.1", readme="edge")
    .from_base("parachutes/base-python:3.11")
    .with_python("3.11")
    .apt_install(["git", "curl"])
    .with_env("HF_HOME", "/cache")
    .set_workdir("/app")
    .run_command("pip install numpy")
    .with_entrypoint(["python", "-m", "app"])
)

chute = Chute(
    username="corpus",
    name="edge-image",
    image=image,
    tagline="edge",
    readme="Image edge cases",
    node_selector=NodeSelector(gpu_count=2, min_vram_gb_per_gpu=16, include=["rtx4090", "v100", "L40S"], exclude=["H100"]),
    concurrency=4,
    max_instances=3,
    scaling_threshold=0.5,
    shutdown_after_seconds=600,
    allow_external_egress=True,
)


class Query(BaseModel):
    text: str


@chute.cord(public_api_path="/echo", public_api_method="POST")
async def echo(self, query: Query) -> Query:
    return query


@chute.cord(public_api_path="/stream", stream=True)
async def stream(self, query: Query):
    yield query.text
