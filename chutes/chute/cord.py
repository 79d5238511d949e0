"""`Cord`: one HTTP function of a chute, declared with `@chute.cord(...)` (spec 2).

The `Cord` object is the decorator. Decorating a function records it, derives its paths and
schemas, and leaves the cord in `chute.cords`, from which `chute.initialize()` registers a route
whose handler is `Cord.request_handler`:

- a plain cord calls the function with the chute as `self` and the whole JSON body as the single
  positional argument after it (converted to the function's pydantic model when it takes one);
- a passthrough cord proxies the body to an HTTP server inside the instance (an inference engine
  on 127.0.0.1) instead of running Python;
- a streaming cord answers with a StreamingResponse of what the generator (or upstream) yields.

What the decorator returns differs from the real SDK. There, on a developer's machine, it returns
a client that invokes the deployed chute through the platform API (pickled arguments, signed
request, SSE envelope); that legacy path is not supported here. It returns a `CordFunction`
instead, which calls the original function directly: non-passthrough functions get the chute as
`self`, passthrough ones (whose body only post-processes upstream results) get the arguments as
given. The same object is returned inside an instance, where requests go through the routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import inspect
import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

import httpx
from fastapi import HTTPException, Request, status
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import iterate_in_threadpool

# Defined in chutes.exception, where the published SDK has them; importable from here as before.
from chutes.exception import DuplicatePath as DuplicatePath
from chutes.exception import InvalidPath as InvalidPath
from chutes.util.schema import JsonSchema, extract_models, extract_schemas, is_model_class, schema_of

if TYPE_CHECKING:
    from chutes.chute.base import Chute
    from chutes.config import Config

logger = logging.getLogger(__name__)

#: Cord paths: lower-case segments of letters, digits, `_` and `-` (not first); no `{param}`s.
PATH_RE: Final = re.compile(r"^(/[a-z0-9_]+[a-z0-9-_]*)+$")

#: Upstream port of a passthrough cord that does not name one.
DEFAULT_PASSTHROUGH_PORT: Final = 8000

#: Longest a non-streaming call may run, in seconds (the real SDK's limit).
CALL_TIMEOUT_SECONDS: Final = 1800.0

#: Passthrough connect timeouts, in seconds: SGLang can be slow to accept under load.
PASSTHROUGH_CONNECT_TIMEOUT: Final = 5.0
SGLANG_CONNECT_TIMEOUT: Final = 30.0

# Body keys forwarded to the upstream request when a passthrough body carries request options
# (a dict with both `json` and `params`) rather than being the JSON to forward.
_REQUEST_OPTION_KEYS: Final = ("json", "params", "headers", "timeout")

_NO_BODY: Final = object()


def normalize_path(path: str) -> str:
    """One leading slash, no trailing one; InvalidPath unless it matches PATH_RE."""
    normalized = "/" + path.strip("/")
    if "//" in normalized or not PATH_RE.match(normalized):
        raise InvalidPath(normalized)
    return normalized


async def request_body(request: Request) -> Any:
    """The decoded JSON body (None when empty). A runtime that decodes or decrypts the body itself
    puts the result in `request.state.decrypted`, which then wins."""
    decoded = getattr(request.state, "decrypted", _NO_BODY)
    if decoded is not _NO_BODY:
        return decoded
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail="Invalid JSON body") from None


def _error_detail(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


async def _lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream body line by line, terminators kept, so the relayed bytes are the upstream's."""
    partial: list[bytes] = []  # pieces of a line spanning chunks, joined once it ends
    async for chunk in response.aiter_bytes():
        *complete, rest = chunk.split(b"\n")
        for line in complete:
            yield b"".join([*partial, line, b"\n"])
            partial = []
        if rest:
            partial.append(rest)
    if partial:
        yield b"".join(partial)


class CordFunction:
    """What `@chute.cord(...)` returns: a plain callable running the decorated function directly
    (see the module docstring). `cord` is the Cord it belongs to."""

    def __init__(self, cord: Cord) -> None:
        self.cord = cord
        functools.update_wrapper(self, cord.func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.cord.passthrough:
            return self.cord.func(*args, **kwargs)
        return self.cord.func(self.cord.app, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<cord {self.cord.func.__name__} {self.cord.path}>"


class Cord:
    """An HTTP function of a chute; use it through `chute.cord(**kwargs)` as a decorator."""

    def __init__(
        self,
        app: Chute,
        stream: bool = False,
        path: str | None = None,
        passthrough_path: str | None = None,
        passthrough: bool = False,
        passthrough_port: int | None = None,
        public_api_path: str | None = None,
        public_api_method: str = "POST",
        method: str = "POST",
        provision_timeout: int = 180,
        input_schema: type[BaseModel] | JsonSchema | None = None,
        minimal_input_schema: type[BaseModel] | JsonSchema | None = None,
        output_content_type: str | None = None,
        output_schema: type[BaseModel] | JsonSchema | None = None,
        sglang_passthrough: bool = False,
        **session_kwargs: Any,
    ) -> None:
        self.app = app
        self._func: Callable[..., Any] | None = None
        self._path: str | None = None
        self._passthrough_path: str | None = None
        self._public_api_path: str | None = None
        if path:
            self.path = path
        if passthrough_path:
            self.passthrough_path = passthrough_path
        if public_api_path:
            self.public_api_path = public_api_path
        self.public_api_method = public_api_method
        self.method = method
        self.stream = stream
        self.passthrough = passthrough
        self.passthrough_port = passthrough_port
        self.sglang_passthrough = sglang_passthrough
        # Client-side options of the real SDK (provisioning retries, aiohttp session options):
        # kept so chute files passing them load, unused here. Templates pass extras like
        # `pass_chute=True` through the same door.
        self.provision_timeout = provision_timeout
        self.session_kwargs = session_kwargs
        # An explicit input model becomes the request model as well as the schema.
        self.input_models: list[type[BaseModel]] | None = (
            [input_schema] if is_model_class(input_schema) else None
        )
        self.input_schema: JsonSchema | None = schema_of(input_schema, minimal=True)
        self.minimal_input_schema: JsonSchema | None = schema_of(minimal_input_schema, minimal=True)
        self.output_schema: JsonSchema | None = schema_of(output_schema, minimal=False)
        self.output_content_type = output_content_type

    @property
    def config(self) -> Config:
        """The CLI config (API URL, credentials), read on first use, as in the published SDK."""
        from chutes.config import get_config

        return get_config()

    # ---- paths --------------------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """The route of the cord inside an instance (default `/<function name>`)."""
        return self._path

    @path.setter
    def path(self, path: str) -> None:
        normalized = normalize_path(path)
        if any(cord is not self and cord.path == normalized for cord in self.app.cords):
            raise DuplicatePath(normalized)
        self._path = normalized

    @property
    def passthrough_path(self) -> str | None:
        """The upstream path a passthrough cord forwards to (default `/<function name>`)."""
        return self._passthrough_path

    @passthrough_path.setter
    def passthrough_path(self, path: str) -> None:
        self._passthrough_path = normalize_path(path)

    @property
    def public_api_path(self) -> str | None:
        """The path on the chute's public hostname, e.g. `/v1/chat/completions`."""
        return self._public_api_path

    @public_api_path.setter
    def public_api_path(self, path: str) -> None:
        self._public_api_path = normalize_path(path)

    @property
    def func(self) -> Callable[..., Any]:
        """The decorated user function."""
        if self._func is None:
            raise RuntimeError("this cord has not decorated a function yet")
        return self._func

    @property
    def decorated(self) -> bool:
        """Whether the cord has decorated its function yet."""
        return self._func is not None

    @property
    def is_sglang_passthrough(self) -> bool:
        """Passthrough to SGLang: requests get a `rid` so a disconnect can abort them upstream."""
        return self.passthrough and self.sglang_passthrough

    # ---- decoration -----------------------------------------------------------------------------

    def __call__(self, func: Callable[..., Any]) -> CordFunction:
        try:
            self._func = func
            if self._path is None:
                self.path = func.__name__
            if self._passthrough_path is None:
                self.passthrough_path = func.__name__
        except ValueError:
            # A cord that cannot be decorated must not linger in chute.cords half-made.
            self._func = None
            with contextlib.suppress(ValueError):
                self.app.cords.remove(self)
            raise
        if not self.input_models:
            self.input_models = extract_models(func)
        derived_input, derived_output = extract_schemas(func)
        if not self.input_schema:
            self.input_schema = derived_input
        if not self.output_schema:
            self.output_schema = derived_output
        if not self.output_content_type and derived_output is not None:
            is_object = derived_output.get("type") == "object"
            self.output_content_type = "application/json" if is_object else "text/plain"
        return CordFunction(self)

    def to_dict(self) -> dict[str, Any]:
        """The cord as the deploy request sends it (spec 2.8): these keys, in this order."""
        return {
            "method": self.method,
            "path": self.path,
            "public_api_path": self.public_api_path,
            "public_api_method": self.public_api_method,
            "stream": self.stream,
            "function": self.func.__name__,
            "input_schema": copy.deepcopy(self.input_schema),
            "output_schema": copy.deepcopy(self.output_schema),
            "output_content_type": self.output_content_type,
            "minimal_input_schema": copy.deepcopy(self.minimal_input_schema),
            "passthrough": self.passthrough,
        }

    def __repr__(self) -> str:
        name = self._func.__name__ if self._func else "?"
        return f"Cord({name}, path={self.path!r}, public_api_path={self.public_api_path!r})"

    # ---- request handling -------------------------------------------------------------------------

    async def request_handler(self, request: Request) -> Any:
        """The route handler `chute.initialize()` registers (spec 2.5)."""
        body = await request_body(request)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if self.passthrough:
            kwargs = self._passthrough_options(body, request)
        else:
            # The whole body is the one argument after `self`; it is not spread into parameters.
            args = [body] if body else []
            models = self.input_models
            if models and len(args) == len(models) and all(isinstance(arg, dict) for arg in args):
                try:
                    args = [model(**arg) for model, arg in zip(models, args, strict=True)]
                except ValidationError:
                    raise HTTPException(
                        status_code=status.HTTP_400_BAD_REQUEST, detail="Invalid input parameters"
                    ) from None

        if not self.stream:
            if self.passthrough:
                return await self._passthrough_call(kwargs)
            return await self._call(args)

        chunks: AsyncGenerator[Any, None] = (
            self._passthrough_stream(kwargs) if self.passthrough else self._stream(args)
        )
        # Wait for the first chunk before answering, so a call that fails at once is an error
        # status rather than a 200 with a broken body.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            return StreamingResponse(iter(()))
        except HTTPException:
            raise
        except Exception as error:
            logger.exception("stream of %s failed to start", self.func.__name__)
            raise HTTPException(
                status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
                detail=f"Error initializing stream: {error}",
            ) from error

        async def relay() -> AsyncIterator[Any]:
            try:
                yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                # Closed early (client gone): close the source too, releasing its upstream now.
                await chunks.aclose()

        return StreamingResponse(relay())

    # The real SDK's name for the handler, for code written against it.
    _request_handler = request_handler

    async def _call(self, args: list[Any]) -> Any:
        """Run the user function: async ones on the loop, sync ones in a worker thread."""
        func = self.func
        call = (
            func(self.app, *args)
            if inspect.iscoroutinefunction(func)
            else asyncio.to_thread(func, self.app, *args)
        )
        result = await asyncio.wait_for(call, CALL_TIMEOUT_SECONDS)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _stream(self, args: list[Any]) -> AsyncGenerator[Any, None]:
        """The items of the user's generator, sync generators drained in a worker thread."""
        produced = self.func(self.app, *args)
        if inspect.isawaitable(produced):
            produced = await produced
        if hasattr(produced, "__aiter__"):
            async for item in produced:
                yield item
        elif isinstance(produced, Iterable):
            iterator: Iterator[Any] = iter(produced)
            async for item in iterate_in_threadpool(iterator):
                yield item
        else:
            raise TypeError(f"streaming cord {self.func.__name__} must return a generator")

    # ---- passthrough ----------------------------------------------------------------------------

    def _passthrough_options(self, body: Any, request: Request) -> dict[str, Any]:
        if isinstance(body, dict) and "json" in body and "params" in body:
            options = {key: body[key] for key in _REQUEST_OPTION_KEYS if key in body}
        else:
            options = {"json": body} if body else {}
        payload = options.get("json")
        if self.is_sglang_passthrough and isinstance(payload, dict):
            request.state.sglang_rid = payload.setdefault("rid", uuid.uuid4().hex)
        headers = dict(options.get("headers") or {})
        headers.update(self.app.passthrough_headers)
        options["headers"] = headers
        return options

    def _client(self, options: dict[str, Any]) -> httpx.AsyncClient:
        port = self.passthrough_port or DEFAULT_PASSTHROUGH_PORT
        ssl_context = self.app.passthrough_ssl_context
        scheme = "https" if ssl_context is not None else "http"
        if self.is_sglang_passthrough:
            timeout = httpx.Timeout(None, connect=SGLANG_CONNECT_TIMEOUT)
        else:
            total = options.pop("timeout", None) or CALL_TIMEOUT_SECONDS
            timeout = httpx.Timeout(total, connect=PASSTHROUGH_CONNECT_TIMEOUT)
        return httpx.AsyncClient(
            base_url=f"{scheme}://127.0.0.1:{port}",
            timeout=timeout,
            verify=ssl_context if ssl_context is not None else True,
        )

    async def _passthrough_call(self, options: dict[str, Any]) -> Any:
        async with self._client(options) as client:
            response = await client.request(self.method, self.passthrough_path or "/", **options)
        if not response.is_success:
            raise HTTPException(status_code=response.status_code, detail=_error_detail(response))
        try:
            return response.json()
        except ValueError:
            # Not JSON (an engine's plain-text or binary answer): relay it as it came.
            return Response(
                content=response.content,
                status_code=response.status_code,
                media_type=response.headers.get("content-type"),
            )

    async def _passthrough_stream(self, options: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        payload = options.get("json")
        rid = payload.get("rid") if self.is_sglang_passthrough and isinstance(payload, dict) else None
        finished = False
        async with self._client(options) as client:
            upstream = client.build_request(self.method, self.passthrough_path or "/", **options)
            response = await client.send(upstream, stream=True)
            try:
                if not response.is_success:
                    await response.aread()
                    raise HTTPException(status_code=response.status_code, detail=_error_detail(response))
                async for line in _lines(response):
                    yield line
                finished = True
            finally:
                await response.aclose()
                if rid and response.is_success and not finished:
                    # The client went away mid-stream: free the engine's slot.
                    _spawn(self._abort_sglang_request(rid))

    async def _abort_sglang_request(self, rid: str) -> None:
        port = self.passthrough_port or DEFAULT_PASSTHROUGH_PORT
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0)) as client:
                await client.post(
                    f"http://127.0.0.1:{port}/abort_request",
                    json={"rid": rid},
                    headers=self.app.passthrough_headers,
                )
        except httpx.HTTPError as error:
            logger.warning("could not abort SGLang request %s: %s", rid, error)


# Tasks started without an owner are kept here until done, so they are not garbage collected.
_background: set[asyncio.Task[Any]] = set()


def _spawn(coroutine: Any) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
