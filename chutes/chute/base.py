"""`Chute`: a deployable application, a FastAPI app with cords, jobs and lifecycle hooks (spec 1).

    chute = Chute(username="me", name="text-generator", image="parachutes/python:3.12")

    @chute.on_startup(priority=10)
    async def load(self): ...

    @chute.cord(public_api_path="/generate")
    async def generate(self, prompt: str) -> str: ...

Differences from the real SDK, on purpose:
- `initialize()` runs the startup hooks and registers the cord routes whatever
  `CHUTES_EXECUTION_CONTEXT` says (the real one is a no-op outside an instance): there is no
  encrypted instance transport here, bodies are plain JSON, and the runtime calls it only where it
  serves the chute. It is idempotent.
- `shutdown()` runs the shutdown hooks (the real SDK stores them but never runs them).
- In dev mode (`CHUTES_DEV_MODE=true`) cords sharing a public path and method (a template's
  streaming and non-streaming chat) share one route that picks the cord by the body's `stream`
  flag; the real SDK registers both and the first always wins.
- `passthrough_headers` is copied, not a mutable default shared by every chute.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import ssl
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from chutes.chute.cord import Cord, request_body
from chutes.chute.job import Job
from chutes.chute.node_selector import NodeSelector
from chutes.image import Image
from chutes.util.context import is_dev_mode, is_remote

logger = logging.getLogger(__name__)

Hook = Callable[[], Any]
HookFunction = Callable[..., Any]

DEFAULT_HOOK_PRIORITY: Final = 50

# Inside an instance, calls to the engine and the platform's in-cluster API must not go through an
# HTTP proxy (spec 1.6); the instance may inherit proxy settings from its pod.
_LOCAL_HOSTS: Final = "localhost,127.0.0.1,api,api.chutes.svc,api.chutes.svc.cluster.local"
if is_remote():
    _previous = os.environ.get("NO_PROXY")
    os.environ["NO_PROXY"] = f"{_LOCAL_HOSTS},{_previous}" if _previous else _LOCAL_HOSTS


class Chute(FastAPI):
    """A chute: its identity and scaling settings, cords, jobs and lifecycle hooks."""

    def __init__(
        self,
        username: str,
        name: str,
        image: str | Image,
        tagline: str = "",
        readme: str = "",
        standard_template: str | None = None,
        revision: str | None = None,
        node_selector: NodeSelector | None = None,
        concurrency: int = 1,
        max_instances: int = 1,
        shutdown_after_seconds: int = 300,
        scaling_threshold: float = 0.75,
        allow_external_egress: bool = False,
        encrypted_fs: bool = False,
        passthrough_headers: Mapping[str, str] | None = None,
        tee: bool = False,
        lock_modules: bool | None = None,
        **kwargs: Any,
    ) -> None:
        # No interactive docs on instances: they would be public on the chute's hostname.
        kwargs.setdefault("docs_url", None)
        kwargs.setdefault("redoc_url", None)
        super().__init__(**kwargs)
        self._username = username
        self._name = name
        self._image = image
        self._tagline = tagline
        self._readme = readme
        self._standard_template = standard_template
        self._node_selector = node_selector
        self.revision = revision
        self.concurrency = concurrency
        self.max_instances = max_instances
        self.shutdown_after_seconds = shutdown_after_seconds
        self.scaling_threshold = scaling_threshold
        self.allow_external_egress = allow_external_egress
        self.encrypted_fs = encrypted_fs
        self.passthrough_headers: dict[str, str] = dict(passthrough_headers or {})
        self.tee = tee
        self.lock_modules = lock_modules
        # TLS towards a passthrough engine, when the runtime sets one up.
        self.passthrough_ssl_context: ssl.SSLContext | None = None
        self._startup_hooks: list[tuple[int, Hook]] = []
        self._shutdown_hooks: list[tuple[int, Hook]] = []
        self._cords: list[Cord] = []
        self._jobs: list[Job] = []
        self._initialized = False
        self._shut_down = False

    # ---- identity -------------------------------------------------------------------------------

    @property
    def username(self) -> str:
        """The owner's username, as given."""
        return self._username

    @property
    def name(self) -> str:
        """The chute's name."""
        return self._name

    @property
    def chute(self) -> Chute:
        """The chute itself, so code may say `chute.chute` whether `chute` is a Chute or a
        ChutePack (what the platform's teeify appends: `chute.chute._name = ...`)."""
        return self

    @property
    def uid(self) -> str:
        """uuid5(NAMESPACE_OID, "<username>::chute::<name>"), case kept: the API's chute_id."""
        return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{self._username}::chute::{self._name}"))

    @property
    def image(self) -> str | Image:
        """The image: a reference string (`user/name:tag`) or an Image built with the SDK."""
        return self._image

    @property
    def tagline(self) -> str:
        """One-line description."""
        return self._tagline

    @property
    def readme(self) -> str:
        """Markdown documentation."""
        return self._readme

    @property
    def standard_template(self) -> str | None:
        """The template the chute was built from (vllm, embedding, diffusion), if any."""
        return self._standard_template

    @property
    def node_selector(self) -> NodeSelector | None:
        """The GPUs the chute needs."""
        return self._node_selector

    @property
    def cords(self) -> list[Cord]:
        """The chute's cords, in declaration order."""
        return self._cords

    @property
    def jobs(self) -> list[Job]:
        """The chute's jobs, in declaration order."""
        return self._jobs

    def __repr__(self) -> str:
        return f"Chute(username={self._username!r}, name={self._name!r})"

    # ---- decorators -----------------------------------------------------------------------------

    def _hook_decorator(self, hooks: list[tuple[int, Hook]], priority: int) -> Callable[[HookFunction], Hook]:
        def decorator(func: HookFunction) -> Hook:
            # The hook gets the chute as `self`; a sync hook's return value is dropped.
            wrapper: Hook
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper() -> Any:
                    return await func(self)

                wrapper = async_wrapper
            else:

                @functools.wraps(func)
                def sync_wrapper() -> Any:
                    result = func(self)
                    # Return values are dropped, except an awaitable (a partial or callable object
                    # wrapping a coroutine function looks sync): the caller awaits that.
                    return result if inspect.isawaitable(result) else None

                wrapper = sync_wrapper
            hooks.append((priority, wrapper))
            return wrapper

        return decorator

    def on_startup(self, priority: int = DEFAULT_HOOK_PRIORITY) -> Callable[[HookFunction], Hook]:
        """Register `func(self)` to run at startup; lower priority first, ties in registration order."""
        return self._hook_decorator(self._startup_hooks, priority)

    def on_shutdown(self, priority: int = DEFAULT_HOOK_PRIORITY) -> Callable[[HookFunction], Hook]:
        """Register `func(self)` to run at shutdown; lower priority first, ties in registration order."""
        return self._hook_decorator(self._shutdown_hooks, priority)

    def cord(self, **kwargs: Any) -> Cord:
        """A cord decorator (see `Cord` for the options); the cord joins `chute.cords` at once."""
        cord = Cord(self, **kwargs)
        self._cords.append(cord)
        return cord

    def job(self, **kwargs: Any) -> Job:
        """A job decorator (`ports`, `timeout`, `upload`, `ssh`); the job joins `chute.jobs` at once."""
        job = Job(self, **kwargs)
        self._jobs.append(job)
        return job

    # ---- lifecycle ------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Run the startup hooks, then add one route per cord. Does nothing the second time.

        Routes: `POST cord.path` normally; in dev mode (`CHUTES_DEV_MODE=true`) the cord's public
        path and method (its internal path when it has no public one).
        """
        if self._initialized:
            return
        for _, hook in sorted(self._startup_hooks, key=lambda entry: entry[0]):
            result = hook()
            if inspect.isawaitable(result):
                await result
        self._add_cord_routes()
        for job in self._jobs:
            logger.info("found job definition %r", job)
        self._initialized = True

    async def shutdown(self) -> None:
        """Run the shutdown hooks in priority order, once. A failing hook does not stop the others;
        the first failure is raised after all have run."""
        if self._shut_down:
            return
        self._shut_down = True
        failure: BaseException | None = None
        for _, hook in sorted(self._shutdown_hooks, key=lambda entry: entry[0]):
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception as error:
                logger.exception("shutdown hook %s failed", getattr(hook, "__name__", hook))
                failure = failure or error
        if failure is not None:
            raise failure

    def _add_cord_routes(self) -> None:
        # A Cord that never decorated a function has nothing to serve.
        cords = [cord for cord in self._cords if cord.decorated]
        if not is_dev_mode():
            for cord in cords:
                self.add_api_route(
                    cord.path or "",
                    cord.request_handler,
                    methods=["POST"],
                    response_model=None,
                    name=cord.func.__name__,
                )
            return
        routes: dict[tuple[str, str], list[Cord]] = {}
        for cord in cords:
            path = cord.public_api_path or cord.path or ""
            routes.setdefault((path, cord.public_api_method.upper()), []).append(cord)
        for (path, method), sharing in routes.items():
            handler = sharing[0].request_handler if len(sharing) == 1 else _pick_by_stream(sharing)
            name = "+".join(cord.func.__name__ for cord in sharing)
            self.add_api_route(path, handler, methods=[method], response_model=None, name=name)


def _pick_by_stream(cords: list[Cord]) -> Callable[[Request], Any]:
    """One handler for cords sharing a public path and method: the body's `stream` flag picks the
    streaming or the non-streaming one (the first cord when none matches)."""

    async def handler(request: Request) -> Any:
        body = await request_body(request)
        wants_stream = isinstance(body, dict) and bool(body.get("stream"))
        chosen = next((cord for cord in cords if cord.stream == wants_stream), cords[0])
        return await chosen.request_handler(request)

    return handler


class ChutePack(BaseModel):
    """A chute plus extra values; templates return subclasses carrying their cord callables. The
    CLI accepts a ChutePack wherever it accepts a Chute (it uses `.chute`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chute: Chute
