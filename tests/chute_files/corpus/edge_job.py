"""Written for this corpus (not from a public source): a job chute with ports, directives imported
from the published SDK's module paths, and the exception module (issue 15)."""

from chutes.chute import Chute, NodeSelector
from chutes.chute.job import Port
from chutes.exception import DuplicatePath, InvalidPath  # noqa: F401
from chutes.image import Image
from chutes.image.directive.generic_run import RUN  # noqa: F401

image = Image(username="corpus", name="edge-job", tag="0.1").run_command("pip install httpx")

chute = Chute(
    username="corpus",
    name="edge-job",
    image=image,
    node_selector=NodeSelector(gpu_count=1),
)


@chute.job(ports=[Port(name="web", port=8080, proto="http"), Port(name="ssh", port=2202, proto="tcp")], timeout=600)
async def train(self, **job_data):
    return {"ok": True}


@chute.job(upload=False)
def quick(self, **job_data):
    return None
