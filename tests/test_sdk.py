"""The chute SDK (spec chutes-sdk.md 1, 2, 3, 5, 9): Chute, cords, jobs, images and templates.

Requests go through real FastAPI routes (TestClient); passthrough cords and Job.run talk to real
HTTP servers (uvicorn in a thread on a free 127.0.0.1 port).
"""

import asyncio
import contextlib
import importlib.util
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from email.parser import BytesParser
from email.policy import HTTP
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Optional, Union

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

import chutes.chute.job as job_module
from chutes.chute import Chute, ChutePack, Cord, DuplicatePath, InvalidPath, Job, NodeSelector
from chutes.chute.job import Port
from chutes.chute.template.diffusion import GenerationInput, build_diffusion_chute
from chutes.chute.template.embedding import build_embedding_chute, embedding_command
from chutes.chute.template.sglang import build_sglang_chute, sglang_command
from chutes.chute.template.vllm import VLLMChute, build_vllm_chute, vllm_command
from chutes.image import Image, InvalidDirective
from chutes.image.standard import DIFFUSION, SGLANG, VLLM
from chutes.util.schema import extract_schemas, type_to_schema
from tests.conftest import free_port

CHUTE_FILES = Path(__file__).parent / "chute_files"
CORD_KEYS = [
    "method",
    "path",
    "public_api_path",
    "public_api_method",
    "stream",
    "function",
    "input_schema",
    "output_schema",
    "output_content_type",
    "minimal_input_schema",
    "passthrough",
]


# ---- helpers ------------------------------------------------------------------------------------


def load_chute_file(path: Path) -> ModuleType:
    """Import a chute file the way a runner does: as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"chute_file_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def new_chute(**kwargs: Any) -> Chute:
    return Chute(username="tester", name="sdk-test", image="parachutes/python:3.12", **kwargs)


def client_for(chute: Chute) -> TestClient:
    asyncio.run(chute.initialize())
    return TestClient(chute)


# Module-level so type hints resolve the way they do in a chute file.
class MicroArgs(BaseModel):
    text: str
    times: int = 1


class Out(BaseModel):
    foo: str


class Color(Enum):
    red = "red"
    blue = "blue"


class Level(Enum):
    low = 1
    high = 2


# ---- the seed's complete example ------------------------------------------------------------------


def test_seed_example_loads_unchanged_and_serializes() -> None:
    module = load_chute_file(CHUTE_FILES / "seed_example.py")
    chute = module.chute
    assert isinstance(chute, Chute)
    assert (chute.username, chute.name) == ("myuser", "text-generator")
    assert chute.tagline == "Generate text with transformers"
    assert chute.readme == "## Text Generator\n\nGenerates text from prompts."
    assert (chute.concurrency, chute.max_instances, chute.shutdown_after_seconds) == (4, 3, 300)
    assert chute.allow_external_egress is False
    assert chute.node_selector.gpu_count == 1 and chute.node_selector.min_vram_gb_per_gpu == 16
    assert chute.uid == "c2406f33-59ea-5c9d-aa97-eb91023bdb46"
    assert isinstance(chute.image, Image)
    assert chute.image.uid == str(uuid.uuid5(uuid.NAMESPACE_OID, "myuser/my-chute:1.0"))
    assert str(chute.image) == "FROM parachutes/python:3.12\nRUN pip install transformers torch"
    assert chute.jobs == []

    generate, health = (cord.to_dict() for cord in chute.cords)
    assert list(generate) == CORD_KEYS and list(health) == CORD_KEYS
    input_model = module.GenerationInput
    assert chute.cords[0].input_models == [input_model]
    assert {key: generate[key] for key in CORD_KEYS if "schema" not in key} == {
        "method": "POST",
        "path": "/generate",
        "public_api_path": "/generate",
        "public_api_method": "POST",
        "stream": False,
        "function": "generate",
        "output_content_type": "application/json",
        "passthrough": False,
    }
    assert generate["input_schema"]["properties"] == {"input_data": {"$ref": "#/definitions/GenerationInput"}}
    assert generate["input_schema"]["required"] == ["input_data"]
    definitions = generate["input_schema"]["definitions"]
    assert set(definitions) == {"GenerationInput", "GenerationOutput"}
    assert "title" not in definitions["GenerationInput"]
    assert definitions["GenerationInput"]["properties"]["max_tokens"]["maximum"] == 1000
    assert generate["output_schema"] == {
        "type": "object",
        "properties": {
            "text": {"title": "Text", "type": "string"},
            "tokens_used": {"title": "Tokens Used", "type": "integer"},
        },
        "required": ["text", "tokens_used"],
    }
    assert generate["minimal_input_schema"] == {
        "type": "object",
        "properties": {"input_args": {"$ref": "#/definitions/GenerationInput"}},
        "required": ["input_args"],
        "definitions": {"GenerationInput": definitions["GenerationInput"]},
    }
    assert health == {
        "method": "POST",
        "path": "/health",
        "public_api_path": "/health",
        "public_api_method": "GET",
        "stream": False,
        "function": "health",
        "input_schema": {"type": "object", "properties": {}, "required": [], "definitions": {}},
        "output_schema": {"type": "object"},
        "output_content_type": "application/json",
        "minimal_input_schema": None,
        "passthrough": False,
    }
    # Locally the decorated name calls the function with the chute as self; startup has not run.
    assert asyncio.run(module.health()) == {"status": "healthy", "model_loaded": False}
    assert module.health.cord is chute.cords[1]


# ---- Chute ------------------------------------------------------------------------------------------


def test_constructor_defaults_and_passthrough_headers_are_copied() -> None:
    chute = new_chute()
    assert (chute.tagline, chute.readme, chute.standard_template, chute.revision) == ("", "", None, None)
    assert chute.node_selector is None
    assert (chute.concurrency, chute.max_instances, chute.shutdown_after_seconds) == (1, 1, 300)
    assert chute.scaling_threshold == 0.75
    assert (chute.allow_external_egress, chute.encrypted_fs, chute.tee, chute.lock_modules) == (
        False,
        False,
        False,
        None,
    )
    assert chute.passthrough_headers == {} and chute.cords == [] and chute.jobs == []
    assert chute.image == "parachutes/python:3.12" and chute.username == "tester"
    assert chute.docs_url is None and chute.redoc_url is None

    given = {"X-Key": "1"}
    first, second = new_chute(passthrough_headers=given), new_chute()
    first.passthrough_headers["Authorization"] = "Bearer k"
    assert given == {"X-Key": "1"} and second.passthrough_headers == {}
    # Extra keyword arguments configure the FastAPI app.
    assert new_chute(title="My chute").title == "My chute"


def test_uid_is_uuid5_of_username_and_name_case_kept() -> None:
    chute = Chute(username="MyUser", name="Text-Gen", image="x/y:1")
    assert chute.uid == str(uuid.uuid5(uuid.NAMESPACE_OID, "MyUser::chute::Text-Gen"))
    assert chute.uid != Chute(username="myuser", name="text-gen", image="x/y:1").uid


def test_hooks_run_by_priority_then_registration_order() -> None:
    chute = new_chute()
    calls: list[str] = []

    @chute.on_startup()
    async def normal_first(self: Chute) -> str:
        assert self is chute
        calls.append("normal_first")
        return "value"

    @chute.on_startup(priority=10)
    def early(self: Chute) -> None:
        calls.append("early")

    @chute.on_startup(priority=50)
    async def normal_second(self: Chute) -> None:
        calls.append("normal_second")

    @chute.on_startup(priority=90)
    def late(self: Chute) -> None:
        calls.append("late")

    @chute.on_shutdown(priority=80)
    async def close_late(self: Chute) -> None:
        calls.append("close_late")

    @chute.on_shutdown(priority=20)
    def close_early(self: Chute) -> None:
        calls.append("close_early")

    @chute.cord()
    async def ping(self: Chute) -> str:
        return "pong"

    # The decorator returns the wrapper, bound to the chute (async return values propagate).
    assert asyncio.run(normal_first()) == "value"
    calls.clear()
    asyncio.run(chute.initialize())
    assert calls == ["early", "normal_first", "normal_second", "late"]
    routes = len(chute.routes)
    asyncio.run(chute.initialize())
    assert calls == ["early", "normal_first", "normal_second", "late"] and len(chute.routes) == routes

    asyncio.run(chute.shutdown())
    assert calls[4:] == ["close_early", "close_late"]


def test_failing_shutdown_hook_does_not_stop_the_others() -> None:
    chute = new_chute()
    ran: list[str] = []

    @chute.on_shutdown(priority=1)
    def broken(self: Chute) -> None:
        raise RuntimeError("cleanup failed")

    @chute.on_shutdown(priority=2)
    def after(self: Chute) -> None:
        ran.append("after")

    with pytest.raises(RuntimeError, match="cleanup failed"):
        asyncio.run(chute.shutdown())
    assert ran == ["after"]


# ---- cord paths ------------------------------------------------------------------------------------


def test_cord_path_rules_and_duplicates() -> None:
    chute = new_chute()
    for bad in ("/Upper", "/a//b", "/items/{item_id}", "/-dash", "/", "/a b"):
        with pytest.raises(InvalidPath):
            chute.cord(path=bad)
    with pytest.raises(InvalidPath):
        chute.cord(public_api_path="/v1/Chat")
    assert issubclass(InvalidPath, ValueError) and issubclass(DuplicatePath, ValueError)

    @chute.cord(path="echo/", public_api_path="v1/echo-it/", passthrough_path="/up_stream")
    async def echo(self: Chute, body: Any) -> Any:
        return body

    cord = chute.cords[0]
    assert (cord.path, cord.public_api_path, cord.passthrough_path) == ("/echo", "/v1/echo-it", "/up_stream")

    @chute.cord()
    async def default_path(self: Chute) -> None: ...

    assert (chute.cords[1].path, chute.cords[1].passthrough_path) == ("/default_path", "/default_path")

    with pytest.raises(DuplicatePath):
        chute.cord(path="/echo")

    # The default path comes from the function name: a duplicate (or upper-case) name fails and
    # leaves no half-made cord behind. Public paths may be shared.
    with pytest.raises(DuplicatePath):

        @chute.cord(public_api_path="/v1/echo-it")
        async def echo(self: Chute) -> None: ...

    with pytest.raises(InvalidPath):

        @chute.cord()
        async def Shout(self: Chute) -> None: ...

    assert [c.path for c in chute.cords] == ["/echo", "/default_path"]


# ---- schemas ------------------------------------------------------------------------------------------


def test_schema_extraction_matches_the_verified_examples() -> None:
    chute = new_chute()

    @chute.cord()
    async def echo(self, input_args: MicroArgs) -> Out:  # type: ignore[no-untyped-def]
        return Out(foo=input_args.text)

    @chute.cord()
    async def prim(self, prompt: str, n: int = 3) -> str:  # type: ignore[no-untyped-def]
        return prompt * n

    echo_cord, prim_cord = chute.cords
    micro = MicroArgs.model_json_schema()
    micro.pop("title")
    out = Out.model_json_schema()
    out.pop("title")
    assert echo_cord.input_schema == {
        "type": "object",
        "properties": {"input_args": {"$ref": "#/definitions/MicroArgs"}},
        "required": ["input_args"],
        "definitions": {"MicroArgs": micro, "Out": out},
    }
    assert echo_cord.output_schema == {
        "type": "object",
        "properties": {"foo": {"title": "Foo", "type": "string"}},
        "required": ["foo"],
    }
    assert echo_cord.output_content_type == "application/json"
    assert echo_cord.input_models == [MicroArgs]

    assert prim_cord.input_schema == {
        "type": "object",
        "properties": {"prompt": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["prompt", "n"],
        "definitions": {},
    }
    assert prim_cord.output_schema == {"type": "string"}
    assert prim_cord.output_content_type == "text/plain"
    assert prim_cord.input_models is None


def test_schema_of_each_hint_kind() -> None:
    definitions: dict[str, Any] = {}
    cases: list[tuple[Any, dict[str, Any]]] = [
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (list, {"type": "array", "items": {}}),
        (dict, {"type": "object"}),
        (None, {"type": "null"}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "items": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (set[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Color, {"type": "string", "enum": ["red", "blue"]}),
        (Level, {"type": "integer", "enum": [1, 2]}),
        (Union[int, str], {"oneOf": [{"type": "integer"}, {"type": "string"}]}),  # noqa: UP007
        # The published SDK's mapping, byte for byte: NoneType says nothing, `X | None` is no
        # typing.Union, and only list/dict/set/tuple generics are containers.
        (Optional[float], {"oneOf": [{"type": "number"}, {}]}),  # noqa: UP045
        (float | None, {}),
        (Sequence[str], {}),
        (
            tuple[int, ...],
            {"type": "array", "items": [{"type": "integer"}, {}], "minItems": 2, "maxItems": 2},
        ),
        (Response, {}),
        (list[MicroArgs], {"type": "array", "items": {"$ref": "#/definitions/MicroArgs"}}),
    ]
    for hint, expected in cases:
        assert type_to_schema(hint, definitions) == expected, hint
    assert list(definitions) == ["MicroArgs"]


def test_content_type_rules() -> None:
    chute = new_chute()

    @chute.cord()
    def untyped(self, data):  # type: ignore[no-untyped-def]
        return data

    @chute.cord(output_content_type="image/png")
    def picture(self: Chute) -> Response:
        return Response(b"png", media_type="image/png")

    @chute.cord(output_schema=Out)
    def explicit(self: Chute) -> dict[str, str]:
        return {"foo": "bar"}

    untyped_cord, picture_cord, explicit_cord = chute.cords
    assert untyped_cord.output_schema is None and untyped_cord.output_content_type is None
    assert untyped_cord.input_schema == {
        "type": "object",
        "properties": {},
        "required": [],
        "definitions": {},
    }
    assert picture_cord.output_content_type == "image/png" and picture_cord.output_schema == {}
    # pydantic's plain schema, as the published SDK sends an explicit output model.
    assert explicit_cord.output_schema == Out.model_json_schema()
    assert explicit_cord.output_content_type == "application/json"
    # A typed `self` is not a request parameter.
    assert extract_schemas(picture_cord.func)[0]["properties"] == {}
    with pytest.raises(TypeError):
        chute.cord(input_schema="not a schema")


# ---- requests -----------------------------------------------------------------------------------------


def test_initialize_serves_cords_on_their_paths() -> None:
    chute = new_chute()

    @chute.cord(public_api_path="/v1/raw")
    async def raw(self: Chute, body: Any) -> dict[str, Any]:
        return {"got": body, "chute": self.name, "thread": threading.current_thread().name}

    @chute.cord()
    def shout(self: Chute, body: Any) -> dict[str, str]:
        # Sync cords run in a worker thread, off the event loop.
        return {"text": body["text"].upper(), "thread": threading.current_thread().name}

    @chute.cord()
    async def typed(self: Chute, args: MicroArgs) -> Out:
        assert isinstance(args, MicroArgs)
        return Out(foo=args.text * args.times)

    @chute.cord()
    async def empty(self: Chute, *args: Any) -> dict[str, int]:
        return {"args": len(args)}

    @chute.cord()
    async def refuse(self: Chute, body: Any) -> None:
        raise HTTPException(status_code=403, detail="not you")

    @chute.cord()
    async def picture(self: Chute, body: Any) -> Response:
        return Response(b"\x89PNG", media_type="image/png")

    with client_for(chute) as client:
        raw_answer = client.post("/raw", json={"a": [1, 2]}).json()
        assert (raw_answer["got"], raw_answer["chute"]) == ({"a": [1, 2]}, "sdk-test")
        # Production routes are the internal paths, always POST.
        assert client.post("/v1/raw", json={}).status_code == 404
        assert client.get("/raw").status_code == 405
        answer = client.post("/shout", json={"text": "hi"}).json()
        assert answer["text"] == "HI" and answer["thread"] != raw_answer["thread"]
        assert client.post("/typed", json={"text": "ab", "times": 2}).json() == {"foo": "abab"}
        invalid = client.post("/typed", json={"times": "many"})
        assert (invalid.status_code, invalid.json()) == (400, {"detail": "Invalid input parameters"})
        # An empty body is no argument at all.
        assert client.post("/empty").json() == {"args": 0}
        assert client.post("/empty", json={}).json() == {"args": 0}
        assert client.post("/refuse", json={"x": 1}).status_code == 403
        picture_answer = client.post("/picture", json={"x": 1})
        assert picture_answer.content == b"\x89PNG" and picture_answer.headers["content-type"] == "image/png"
        assert client.post("/raw", content=b"{not json").status_code == 400


def test_streaming_cords_yield_chunks_in_order() -> None:
    chute = new_chute()

    @chute.cord(stream=True)
    async def count(self: Chute, body: Any) -> AsyncIterator[str]:
        for index in range(body["n"]):
            await asyncio.sleep(0)
            yield f"data: {index}\n\n"

    @chute.cord(stream=True)
    def sync_count(self: Chute, body: Any) -> Iterator[str]:
        yield from (f"{index}\n" for index in range(3))

    @chute.cord(stream=True)
    async def forbidden(self: Chute, body: Any) -> AsyncIterator[str]:
        raise HTTPException(status_code=403, detail="no stream for you")
        yield "never"

    @chute.cord(stream=True)
    async def broken(self: Chute, body: Any) -> AsyncIterator[str]:
        raise RuntimeError("boom")
        yield "never"

    with client_for(chute) as client:
        with client.stream("POST", "/count", json={"n": 4}) as response:
            assert response.status_code == 200
            assert "".join(response.iter_text()) == "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"
        assert client.post("/sync_count", json={"go": True}).text == "0\n1\n2\n"
        # The first chunk is awaited before answering: an immediate failure is an error status.
        assert client.post("/forbidden", json={"x": 1}).status_code == 403
        broken_answer = client.post("/broken", json={"x": 1})
        assert broken_answer.status_code == 500
        assert broken_answer.json() == {"detail": "Error initializing stream: boom"}


def test_dev_mode_serves_public_paths_and_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUTES_DEV_MODE", "true")
    chute = new_chute()

    @chute.cord(public_api_path="/health", public_api_method="GET")
    async def health(self: Chute) -> dict[str, bool]:
        return {"ok": True}

    @chute.cord(public_api_path="/v1/generate", stream=True)
    async def generate_stream(self: Chute, body: Any) -> AsyncIterator[str]:
        yield "streamed"

    @chute.cord(public_api_path="/v1/generate")
    async def generate(self: Chute, body: Any) -> dict[str, str]:
        return {"mode": "whole"}

    @chute.cord()
    async def internal_only(self: Chute, body: Any) -> str:
        return "internal"

    with client_for(chute) as client:
        assert client.get("/health").json() == {"ok": True}
        assert client.post("/health").status_code == 405
        assert client.post("/generate", json={}).status_code == 404
        # Cords sharing a public path and method: the body's stream flag picks one.
        assert client.post("/v1/generate", json={"stream": True}).text == "streamed"
        assert client.post("/v1/generate", json={"stream": False}).json() == {"mode": "whole"}
        assert client.post("/v1/generate", json={"prompt": "x"}).json() == {"mode": "whole"}
        # A cord without a public path keeps its internal one.
        assert client.post("/internal_only", json={"x": 1}).json() == "internal"


def _fake_engine(seen: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-ish upstream recording what it receives."""
    engine = FastAPI()

    @engine.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        if body.get("stream"):

            async def chunks() -> AsyncIterator[str]:
                for word in ("Hel", "lo"):
                    yield f'data: {{"delta": "{word}"}}\n\n'
                yield "data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")
        return {"choices": [{"message": {"content": "Hello"}}], "echo": body}

    @engine.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        seen.append({"auth": request.headers.get("authorization"), "query": dict(request.query_params)})
        return {"data": [{"id": "org/model"}]}

    @engine.post("/broken")
    async def broken() -> Response:
        return Response('{"error": "teapot"}', status_code=418, media_type="application/json")

    return engine


def test_passthrough_cords_proxy_to_the_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    with serve(_fake_engine(seen)) as upstream:
        port = int(upstream.rsplit(":", 1)[1])
        chute = new_chute(passthrough_headers={"Authorization": "Bearer engine-key"})

        @chute.cord(passthrough=True, passthrough_port=port, passthrough_path="/v1/chat/completions")
        async def chat(data: Any) -> Any:
            return data

        @chute.cord(
            passthrough=True, passthrough_port=port, passthrough_path="/v1/chat/completions", stream=True
        )
        async def chat_stream(data: Any) -> Any:
            return data

        @chute.cord(passthrough=True, passthrough_port=port, passthrough_path="/v1/models", method="GET")
        async def models(data: Any) -> Any:
            return data

        @chute.cord(passthrough=True, passthrough_port=port, passthrough_path="/broken")
        async def broken(data: Any) -> Any:
            return data

        @chute.cord(
            path="/sglang",
            passthrough=True,
            passthrough_port=port,
            passthrough_path="/v1/chat/completions",
            sglang_passthrough=True,
        )
        async def sglang_chat(data: Any) -> Any:
            return data

        with client_for(chute) as client:
            answer = client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}]})
            assert answer.json() == {
                "choices": [{"message": {"content": "Hello"}}],
                "echo": {"messages": [{"role": "user", "content": "hi"}]},
            }
            assert seen[-1]["auth"] == "Bearer engine-key"

            streamed = client.post("/chat_stream", json={"stream": True})
            assert streamed.status_code == 200
            assert streamed.text == 'data: {"delta": "Hel"}\n\ndata: {"delta": "lo"}\n\ndata: [DONE]\n\n'

            # A body with `json` and `params` carries request options instead of being the JSON.
            assert client.post("/models", json={"json": None, "params": {"limit": "1"}}).json() == {
                "data": [{"id": "org/model"}]
            }
            assert seen[-1] == {"auth": "Bearer engine-key", "query": {"limit": "1"}}

            failed = client.post("/broken", json={"x": 1})
            assert (failed.status_code, failed.json()) == (418, {"detail": {"error": "teapot"}})

            client.post("/sglang", json={"messages": []})
            rid = seen[-1]["body"]["rid"]
            assert len(rid) == 32 and int(rid, 16) >= 0


# ---- jobs ----------------------------------------------------------------------------------------------


def test_port_validation() -> None:
    for good in (2202, 8002, 8080, 65535):
        assert Port(name="web", port=good, proto="tcp").port == good
    for bad in (22, 80, 8001, 65536):
        with pytest.raises(ValidationError, match="Port must be 2202 or in range 8002-65535"):
            Port(name="web", port=bad, proto="tcp")


def test_job_definition_and_serialization() -> None:
    chute = new_chute()

    @chute.job(
        ports=[Port(name="web", port=8080, proto="http"), {"name": "api", "port": 9000, "proto": "tcp"}],
        timeout=3600,
        ssh=True,
    )
    async def train(self: Chute, **job_data: Any) -> dict[str, str]:
        return {"status": "completed"}

    assert isinstance(train, Job) and chute.jobs == [train] and train.name == "train"
    assert train.to_dict() == {
        "ports": [
            {"name": "web", "port": 8080, "proto": "http"},
            {"name": "api", "port": 9000, "proto": "tcp"},
            {"name": "ssh", "port": 2202, "proto": "tcp"},
        ],
        "timeout": 3600,
        "name": "train",
        "upload": True,
    }

    @chute.job()
    async def rental(self: Chute, **job_data: Any) -> None: ...

    assert rental.to_dict() == {"ports": [], "timeout": None, "name": "rental", "upload": True}
    for bad_timeout in (29, 86401):
        with pytest.raises(ValueError, match="timeout"):
            chute.job(timeout=bad_timeout)
    with pytest.raises(ValueError, match="duplicate"):
        chute.job(ports=[Port(name="a", port=8080, proto="tcp"), Port(name="b", port=8080, proto="udp")])
    with pytest.raises(ValueError, match="duplicate"):
        chute.job(ports=[Port(name="a", port=2202, proto="tcp")], ssh=True)
    assert chute.job(upload=False).upload is False


class JobApi:
    """The job API side of Job.run: records every call, hands out upload URLs."""

    def __init__(self, fail_posts: int = 0) -> None:
        self.events: list[tuple[str, Any]] = []
        self.fail_posts = fail_posts
        self.app = FastAPI()
        self.app.post("/jobs/{job_id}")(self.finish)
        self.app.put("/jobs/{job_id}/upload")(self.upload)
        self.app.put("/jobs/{job_id}")(self.complete)

    async def finish(self, job_id: str, token: str, request: Request) -> Any:
        if self.fail_posts:
            self.fail_posts -= 1
            self.events.append(("POST failed", None))
            return Response(status_code=503)
        body = await request.json()
        self.events.append(("POST", body))
        base = str(request.base_url).rstrip("/")
        names = [*body["output_filenames"], "not-on-disk.txt"]
        urls = {name: f"{base}/jobs/{job_id}/upload?token=file-{index}" for index, name in enumerate(names)}
        return {"job_id": job_id, "output_storage_urls": urls}

    async def upload(self, job_id: str, token: str, request: Request) -> dict[str, str]:
        raw = await request.body()
        header = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(header + raw)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        self.events.append(
            ("UPLOAD", {"token": token, "path": fields["path"][1].decode(), "file": fields["file"]})
        )
        return {"status": "uploaded"}

    async def complete(self, job_id: str, token: str, request: Request) -> dict[str, str]:
        self.events.append(("PUT", await request.json()))
        return {"status": "complete"}


@pytest.fixture
def job_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Job.run sets TMPDIR and makes its output dir with tempfile: keep both inside the test."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(job_module, "RETRY_DELAY_SECONDS", 0)
    return tmp_path


def test_job_run_reports_uploads_and_closes(job_env: Path) -> None:
    chute = new_chute()
    received: dict[str, Any] = {}

    @chute.job(timeout=60)
    async def train(self: Chute, **job_data: Any) -> dict[str, Any]:
        received.update(job_data, chute=self)
        output = Path(job_data["output_dir"])
        (output / "model.bin").write_bytes(b"\x00weights\xff")
        (output / "logs").mkdir()
        (output / "logs" / "train.txt").write_text("epoch 1\nepoch 2\n")
        return {"loss": 0.1, "epochs": job_data["epochs"]}

    api = JobApi()
    with serve(api.app) as url:
        result = asyncio.run(train.run(job_status_url=f"{url}/jobs/job-1?token=secret", epochs=2))

    output_dir = Path(received["output_dir"])
    assert received["epochs"] == 2 and received["chute"] is chute
    assert output_dir.parent == job_env and output_dir.is_dir()
    expected = {
        "status": "complete",
        "result": {"loss": 0.1, "epochs": 2},
        "output_filenames": ["logs/train.txt", "model.bin"],
    }
    assert result == expected
    kinds = [kind for kind, _ in api.events]
    assert kinds == ["POST", "UPLOAD", "UPLOAD", "PUT"]
    assert api.events[0][1] == expected
    uploads = sorted(
        (event for kind, event in api.events if kind == "UPLOAD"), key=lambda event: event["path"]
    )
    assert uploads == [
        {"token": "file-0", "path": "logs/train.txt", "file": ("train.txt", b"epoch 1\nepoch 2\n")},
        {"token": "file-1", "path": "model.bin", "file": ("model.bin", b"\x00weights\xff")},
    ]
    assert api.events[-1] == ("PUT", {"status": "done"})


def test_job_run_without_status_url_only_returns_the_result(job_env: Path) -> None:
    chute = new_chute()

    @chute.job(upload=False)
    def compute(self: Chute, **job_data: Any) -> int:
        return 42

    assert asyncio.run(compute.run(x=1)) == {"status": "complete", "result": 42}


def test_failing_job_reports_error_without_uploads(job_env: Path) -> None:
    chute = new_chute()

    @chute.job()
    async def explode(self: Chute, **job_data: Any) -> None:
        (Path(job_data["output_dir"]) / "partial.bin").write_bytes(b"half")
        raise RuntimeError("boom")

    api = JobApi(fail_posts=2)
    with serve(api.app) as url:
        result = asyncio.run(explode.run(job_status_url=f"{url}/jobs/job-2?token=t"))

    assert result["status"] == "error" and result["output_filenames"] == []
    assert result["detail"].startswith("Job failed: boom\nTraceback")
    # Two refused reports were retried; no files were uploaded for a failed job.
    assert [kind for kind, _ in api.events] == ["POST failed", "POST failed", "POST", "PUT"]
    assert api.events[2][1] == result and api.events[3][1] == {"status": "done"}


def test_job_report_gives_up_after_the_retries(job_env: Path) -> None:
    chute = new_chute()

    @chute.job()
    async def quick(self: Chute, **job_data: Any) -> str:
        return "done"

    api = JobApi(fail_posts=100)
    with serve(api.app) as url, pytest.raises(httpx.HTTPStatusError):
        asyncio.run(quick.run(job_status_url=f"{url}/jobs/job-3?token=t"))
    assert len(api.events) == job_module.RETRY_ATTEMPTS == 7


def test_cancelled_job_raises_and_reports_nothing(job_env: Path) -> None:
    chute = new_chute()

    @chute.job()
    async def forever(self: Chute, **job_data: Any) -> None:
        await asyncio.sleep(3600)

    async def run_and_cancel() -> None:
        task = asyncio.create_task(forever.run(job_status_url="http://127.0.0.1:9/unreachable"))
        await asyncio.sleep(0.05)
        forever.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run_and_cancel())


# ---- images --------------------------------------------------------------------------------------------


def test_image_identity_and_dockerfile() -> None:
    image = Image(username="MyUser", name="My-Image", tag="1.0.2", readme="# readme")
    assert image.uid == str(uuid.uuid5(uuid.NAMESPACE_OID, "myuser/my-image:1.0.2"))
    assert str(image) == "FROM parachutes/python:3.12"
    built = (
        image.from_base("nvidia/cuda:12.4.1-runtime-ubuntu22.04")
        .with_maintainer("me@example.com")
        .apt_install(["git", "curl"])
        .apt_remove("vim")
        .with_env("HF_HOME", "/cache/hf")
        .set_workdir("/app")
        .set_user("chutes")
        .run_command("pip install -U transformers")
        .with_entrypoint("python", "-m", "old")
        .with_entrypoint(["python", "-m", "server"])
        .from_base("registry.example.com:5000/team/base:2")
    )
    assert built is image
    assert str(image) == "\n".join(
        [
            "FROM registry.example.com:5000/team/base:2",
            "MAINTAINER me@example.com",
            "RUN apt-get -y install git curl",
            "RUN apt-get -y remove vim",
            "ENV HF_HOME=/cache/hf",
            "WORKDIR /app",
            "USER chutes",
            "RUN pip install -U transformers",
            'ENTRYPOINT ["python", "-m", "server"]',
        ]
    )


def test_image_validation() -> None:
    for bad_name in ("-x", "a b", "", "ünï"):
        with pytest.raises(ValueError):
            Image(username="u", name=bad_name, tag="1")
    with pytest.raises(ValueError):
        Image(username="u", name="ok", tag="v/1")
    image = Image(username="u", name="ok", tag="1")
    for bad_call in (
        lambda: image.from_base("not a valid image"),
        lambda: image.with_env("1BAD", "x"),
        lambda: image.apt_install("git; rm -rf /"),
        lambda: image.add("https://example.com/x.tar", "/x", checksum="md5:abc"),
        lambda: image.add("no-such-file-*.txt", "/app"),
    ):
        with pytest.raises(InvalidDirective):
            bad_call()
    assert issubclass(InvalidDirective, ValueError) and issubclass(InvalidDirective, AssertionError)
    assert str(image) == "FROM parachutes/python:3.12"


def test_image_add_and_with_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    (tmp_path / "app" / "secret.env").write_text("KEY=1\n")
    image = (
        Image(username="u", name="ok", tag="1")
        .set_workdir("/srv")
        .add("app/*", "/app/", chown="1000:1000", chmod="755", exclude=["app/*.env"])
        .add("https://example.com/repo.git", "/repo", keep_git_dir=True, checksum="sha256:" + "ab" * 32)
        .with_python("3.11.9")
    )
    lines = str(image).splitlines()
    assert lines[2] == "ADD --chown=1000:1000 --chmod=755 app/* /app/"
    assert (
        lines[3]
        == f"ADD --keep-git-dir=true --checksum=sha256:{'ab' * 32} https://example.com/repo.git /repo"
    )
    assert image.build_context == ["app/main.py"]
    assert lines[4:7] == [
        "RUN apt-get update",
        "RUN apt-get -y install build-essential zlib1g-dev libncurses5-dev libgdbm-dev libnss3-dev "
        "libssl-dev libreadline-dev libffi-dev libsqlite3-dev wget libbz2-dev libexpat1-dev liblzma-dev",
        "WORKDIR /usr/src",
    ]
    assert "RUN wget https://www.python.org/ftp/python/3.11.9/Python-3.11.9.tgz" in lines
    assert lines[-5:] == [
        "WORKDIR /srv",
        "RUN ln -s /opt/python/bin/pip3.11 /opt/python/bin/pip",
        "RUN ln -s /opt/python/bin/python3.11 /opt/python/bin/python",
        "RUN echo /opt/python/lib >> /etc/ld.so.conf && ldconfig",
        "RUN rm -rf /usr/src/Python*",
    ]
    # Outside the build directory, nothing matches.
    with pytest.raises(InvalidDirective):
        Image(username="u", name="ok", tag="1").add("app/*", "/app", build_dir=str(tmp_path / "elsewhere"))
    # Inside an instance the image is already built: ADD is a no-op.
    monkeypatch.setenv("CHUTES_EXECUTION_CONTEXT", "REMOTE")
    remote = Image(username="u", name="ok", tag="1").add("missing/*", "/x")
    assert str(remote) == "FROM parachutes/python:3.12"


# ---- templates -----------------------------------------------------------------------------------------


REVISION = "a" * 40


def test_vllm_template_builds_the_chute() -> None:
    pack = build_vllm_chute(
        username="u", model_name="org/model", revision=REVISION, node_selector=NodeSelector(gpu_count=2)
    )
    assert isinstance(pack, VLLMChute) and isinstance(pack, ChutePack)
    chute = pack.chute
    assert (chute.name, chute.standard_template, chute.image, chute.revision) == (
        "org/model",
        "vllm",
        VLLM,
        REVISION,
    )
    assert chute.node_selector.gpu_count == 2 and chute.concurrency == 32
    assert len(chute._startup_hooks) == 1  # launches the engine inside an instance; not run here
    table = [
        (
            c.func.__name__,
            c.path,
            c.passthrough_path,
            c.public_api_path,
            c.public_api_method,
            c.method,
            c.stream,
        )
        for c in chute.cords
    ]
    assert table == [
        ("chat_stream", "/chat_stream", "/v1/chat/completions", "/v1/chat/completions", "POST", "POST", True),
        (
            "completion_stream",
            "/completion_stream",
            "/v1/completions",
            "/v1/completions",
            "POST",
            "POST",
            True,
        ),
        ("chat", "/chat", "/v1/chat/completions", "/v1/chat/completions", "POST", "POST", False),
        ("do_tokenize", "/do_tokenize", "/tokenize", "/tokenize", "POST", "POST", False),
        ("do_detokenize", "/do_detokenize", "/detokenize", "/detokenize", "POST", "POST", False),
        ("completion", "/completion", "/v1/completions", "/v1/completions", "POST", "POST", False),
        ("get_models", "/get_models", "/v1/models", "/v1/models", "GET", "GET", False),
    ]
    assert all(
        c.passthrough and c.passthrough_port == 10101 and not c.sglang_passthrough for c in chute.cords
    )
    chat = chute.cords[2].to_dict()
    assert list(chat) == CORD_KEYS and chat["passthrough"] is True
    assert chat["input_schema"]["properties"] == {
        "input_args": {"$ref": "#/definitions/ChatCompletionRequest"}
    }
    assert chat["output_content_type"] == "application/json"
    minimal = chat["minimal_input_schema"]["definitions"]["MinifiedChatCompletion"]["properties"]
    assert (minimal["model"]["default"], minimal["stream"]["default"], minimal["max_tokens"]["default"]) == (
        "org/model",
        False,
        1024,
    )
    assert chute.cords[-1].to_dict()["input_schema"]["properties"] == {}
    assert pack.models.cord is chute.cords[-1] and pack.chat_stream.cord is chute.cords[0]

    for bad in ({"revision": None}, {"engine_args": "--revision main"}, {"engine_args": "--api-key x"}):
        with pytest.raises(ValueError):
            build_vllm_chute(
                **{
                    "username": "u",
                    "model_name": "m/m",
                    "revision": REVISION,
                    "node_selector": NodeSelector(),
                    **bad,
                }
            )


def test_engine_command_lines() -> None:
    command = vllm_command("org/model", "org/model", REVISION, "KEY", "--max-model-len 8192", 2)
    assert command[1:16] == [
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "org/model",
        "--served-model-name",
        "org/model",
        "--revision",
        REVISION,
        "--api-key",
        "KEY",
        "--port",
        "10101",
        "--host",
        "127.0.0.1",
        "--max-model-len",
    ]
    assert command[16:] == [
        "8192",
        "--tensor-parallel-size",
        "2",
        "--enable-prompt-tokens-details",
        "--disable-custom-all-reduce",
        "--no-enable-log-requests",
        "--no-enable-log-outputs",
        "--no-enable-log-deltas",
    ]
    kept = vllm_command(
        "org/affine-x", "org/affine-x", REVISION, "K", "--tensor-parallel-size=4 --enable-log-requests", 8
    )
    assert "--tensor-parallel-size=4" in kept and "8" not in kept and "--no-enable-log-requests" not in kept
    assert kept[-1] == "--enable-return-hidden-states"
    with pytest.raises(ValueError):
        vllm_command("m", "m", REVISION, "K", "--tp 2 --tensor-parallel-size 2", 2)

    sglang = sglang_command("org/model", REVISION, "KEY", "--context-length 4096", 4)
    assert sglang[1:9] == [
        "-m",
        "sglang.launch_server",
        "--host",
        "127.0.0.1",
        "--port",
        "10101",
        "--model-path",
        "org/model",
    ]
    assert sglang[9:] == [
        "--context-length",
        "4096",
        "--tp",
        "4",
        "--enable-cache-report",
        "--enable-return-hidden-states",
        "--disable-custom-all-reduce",
        "--revision",
        REVISION,
        "--gc-threshold",
        "50000",
        "100",
        "100",
        "--log-requests-level",
        "0",
        "--api-key",
        "KEY",
    ]

    pooler = {"pooling_type": "CLS", "enable_chunked_processing": True, "max_embed_len": 3072000}
    embedding = embedding_command("BAAI/bge-m3", "BAAI/bge-m3", REVISION, "K", None, 1, pooler)
    index = embedding.index("--pooler-config")
    assert (
        embedding[index + 1]
        == '{"pooling_type": "CLS", "enable_chunked_processing": true, "max_embed_len": 3072000}'
    )
    assert embedding[-2:] == ["--tensor-parallel-size", "1"]


def test_sglang_embedding_and_diffusion_templates_build() -> None:
    sglang = build_sglang_chute(
        username="u", model_name="org/model", revision=REVISION, node_selector=NodeSelector()
    )
    assert (sglang.chute.standard_template, sglang.chute.image) == ("vllm", SGLANG)
    assert [c.func.__name__ for c in sglang.chute.cords] == [
        "chat_stream",
        "completion_stream",
        "chat",
        "completion",
        "get_models",
    ]
    assert all(c.sglang_passthrough and c.passthrough_port == 10101 for c in sglang.chute.cords)

    embedding = build_embedding_chute(
        username="u", model_name="BAAI/bge-large-en", revision=REVISION, node_selector=NodeSelector()
    )
    chute = embedding.chute
    assert (chute.standard_template, chute.image, chute.revision) == ("embedding", VLLM, REVISION)
    assert [(c.path, c.public_api_path, c.public_api_method) for c in chute.cords] == [
        ("/embed", "/v1/embeddings", "POST"),
        ("/get_models", "/v1/models", "GET"),
    ]
    assert embedding.embed.cord is chute.cords[0]
    with pytest.raises(ValueError):
        build_embedding_chute(username="u", model_name="m/m", node_selector=NodeSelector())

    diffusion = build_diffusion_chute(
        username="u",
        name="sdxl",
        model_name_or_url="stabilityai/stable-diffusion-xl-base-1.0",
        node_selector=NodeSelector(min_vram_gb_per_gpu=24),
    )
    chute = diffusion.chute
    assert (chute.name, chute.standard_template, chute.image, chute.concurrency) == (
        "sdxl",
        "diffusion",
        DIFFUSION,
        3,
    )
    (generate,) = chute.cords
    assert generate.to_dict() | {
        "input_schema": None,
        "minimal_input_schema": None,
        "output_schema": None,
    } == {
        "method": "POST",
        "path": "/generate",
        "public_api_path": "/generate",
        "public_api_method": "POST",
        "stream": False,
        "function": "generate",
        "input_schema": None,
        "output_schema": None,
        "output_content_type": "image/jpeg",
        "minimal_input_schema": None,
        "passthrough": False,
    }
    assert generate.input_models == [GenerationInput]
    assert generate.minimal_input_schema is not None
    assert generate.minimal_input_schema["definitions"]["MinifiedGenerationInput"]["properties"]["prompt"][
        "default"
    ] == ("a beautiful mountain landscape")


def test_vllm_chute_in_dev_mode_against_a_fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The template's cords, routed on their public paths, reach the engine with its key."""
    monkeypatch.setenv("CHUTES_DEV_MODE", "true")
    chute = build_vllm_chute(
        username="u", model_name="org/model", revision=REVISION, node_selector=NodeSelector()
    ).chute
    chute._startup_hooks.clear()  # the engine launch needs GPUs; the fake engine stands in for it
    seen: list[dict[str, Any]] = []
    with serve(_fake_engine(seen)) as upstream:
        for cord in chute.cords:
            cord.passthrough_port = int(upstream.rsplit(":", 1)[1])
        chute.passthrough_headers["Authorization"] = "Bearer engine-key"
        with client_for(chute) as client:
            whole = client.post("/v1/chat/completions", json={"model": "org/model", "messages": []})
            assert whole.json()["choices"] == [{"message": {"content": "Hello"}}]
            streamed = client.post(
                "/v1/chat/completions", json={"model": "org/model", "messages": [], "stream": True}
            )
            assert streamed.text.endswith("data: [DONE]\n\n")
            assert client.get("/v1/models").json() == {"data": [{"id": "org/model"}]}
    assert {entry["auth"] for entry in seen} == {"Bearer engine-key"}


def test_cord_class_is_exported_and_is_the_decorator() -> None:
    chute = new_chute()
    decorator = chute.cord(public_api_path="/x")
    assert isinstance(decorator, Cord) and chute.cords == [decorator]
    with pytest.raises(RuntimeError):
        decorator.to_dict()
