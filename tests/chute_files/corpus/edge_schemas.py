"""Written for this corpus (not from a public source): the type hints and schema options whose
deploy-body schemas differed from the published SDK's (issue 15)."""

from enum import Enum
from typing import Dict, List, Literal, Optional, Sequence, Set, Tuple, Union

from pydantic import BaseModel, Field

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="corpus",
    name="edge-schemas",
    image="corpus/edge:0.1",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24, include=["rtx4090", "H100", "a100"]),
)


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    label: str
    weight: float = 1.0
    colour: Colour = Colour.RED


class Outer(BaseModel):
    inner: Inner
    items: List[Inner] = []
    extra: Optional[Inner] = None
    note: str | None = None
    tags: Dict[str, int] = Field(default_factory=dict)


class Result(BaseModel):
    outer: Outer
    score: float


@chute.cord(public_api_path="/nested")
async def nested(self, args: Outer) -> Result:
    return Result(outer=args, score=1.0)


@chute.cord(public_api_path="/explicit", output_schema=Result, minimal_input_schema=Inner)
async def explicit(self, args: Outer):
    return Result(outer=args, score=1.0)


@chute.cord(public_api_path="/hints")
async def hints(
    self,
    a: Optional[int],
    b: str | None,
    c: Sequence[str],
    d: tuple[int, str],
    e: Tuple[int, ...],
    f: Set[str],
    g: Literal["x", "y"],
    h: Union[int, str],
    i: Colour,
    j: list,
    k: dict,
    m: Optional[Inner] = None,
) -> None:
    return None


@chute.cord(public_api_path="/listing")
async def listing(self, prompt: str, n: int = 3) -> List[Inner]:
    return []


@chute.cord(public_api_path="/optional_out")
async def optional_out(self, prompt: str) -> Optional[Result]:
    return None


@chute.cord(public_api_path="/text", output_content_type="text/plain")
def text(self, data: Inner) -> str:
    return data.label
