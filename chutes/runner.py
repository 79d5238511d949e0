"""Loading chute files, and `chutes run`: serve a chute over HTTP, or run one of its jobs.

A chute reference is `module:variable`. Like the published CLI, `module` is first looked up as
`./module.py` in the current directory; as our addition it may also be a path
(`examples/echo_chute:chute`, `examples/echo_chute.py:chute`) or a dotted module importable from
the current directory (`pkg.chutes:chute`). The variable must be a `Chute` or a `ChutePack`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import re
import signal
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from chutes.evidence import EVIDENCE_PATH, EvidenceEndpoint
from chutes.instance_logs import LOGS_PATH, LogsEndpoint

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from chutes.chute import Chute

# `module:variable`; the module part may be a path or a dotted name (see the module docstring).
_REF = re.compile(r"^(?P<module>[^:]+):(?P<variable>[A-Za-z_][A-Za-z0-9_]*)$")


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STARTUP_FAILURE = 3


class ChuteLoadError(Exception):
    """The reference does not lead to a chute; the message says why."""


@dataclass(frozen=True)
class LoadedChute:
    chute: Chute
    module: ModuleType
    file: Path | None  # the chute file, when the module came from one
    ref_str: str  # `module:variable` with the bare module name, as the deploy body wants it


def module_file(module_part: str) -> Path | None:
    """The file a reference names: `./x.py`, `path/x.py`, or `path/x` (meaning `path/x.py`)."""
    candidates = [Path(module_part)] if module_part.endswith(".py") else [Path(f"{module_part}.py")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return None


def _import_file(path: Path) -> ModuleType:
    name = path.stem
    # Chute files import their siblings (helpers, models) the way a module run from its own
    # directory would; the real CLI gets that for free because it only loads ./module.py.
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ChuteLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before execution so that pydantic and typing.get_type_hints can resolve the
    # module's own names (e.g. input models under `from __future__ import annotations`).
    sys.modules[name] = module
    from chutes.chute.node_selector import lenient_gpu_names

    try:
        # As lenient as the published SDK at import: see lenient_gpu_names.
        with lenient_gpu_names():
            spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(name, None)
        raise ChuteLoadError(f"importing {path} failed: {type(error).__name__}: {error}") from error
    return module


def load_variable(ref: str) -> tuple[Any, ModuleType, Path | None, str]:
    """Import the file or module of `module:variable` (running its top-level code); returns the
    variable's value, the module, its file (if any) and `module_name:variable`."""
    match = _REF.match(ref)
    if match is None:
        raise ChuteLoadError(f"{ref!r} is not a chute reference: use module:variable, e.g. echo_chute:chute")
    module_part, variable = match["module"], match["variable"]
    file = module_file(module_part)
    if file is not None:
        module = _import_file(file)
        module_name = file.stem
    elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module_part):
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        from chutes.chute.node_selector import lenient_gpu_names

        try:
            with lenient_gpu_names():
                module = importlib.import_module(module_part)
        except ImportError as error:
            raise ChuteLoadError(
                f"no file {module_part}.py here and no module {module_part!r}: {error}"
            ) from None
        source = getattr(module, "__file__", None)
        file = Path(source).resolve() if source else None
        module_name = module_part.rsplit(".", 1)[-1]
    else:
        raise ChuteLoadError(f"no chute file {module_part}.py")
    found = getattr(module, variable, None)
    if found is None:
        raise ChuteLoadError(f"{module_part} has no variable {variable!r}")
    return found, module, file, f"{module_name}:{variable}"


def load_chute(ref: str) -> LoadedChute:
    """Import the chute file or module of `ref` (running its top-level code) and return its chute."""
    found, module, file, ref_str = load_variable(ref)
    from chutes.chute import Chute

    # A ChutePack (templates) carries the chute plus helpers; either form is accepted.
    chute = found if isinstance(found, Chute) else getattr(found, "chute", None)
    if not isinstance(chute, Chute):
        raise ChuteLoadError(f"{ref} is a {type(found).__name__}, not a Chute or ChutePack")
    return LoadedChute(chute=chute, module=module, file=file, ref_str=ref_str)


# ---- serving -----------------------------------------------------------------------------------


class ChuteServer:
    """The ASGI app `chutes run` serves: the chute itself, with the server's lifespan bound to
    `chute.initialize()` (startup hooks, then the cord routes) and `chute.shutdown()` (shutdown
    hooks), so uvicorn runs both around the serving period, including on SIGTERM/Ctrl-C. An
    instance of a TEE chute on a node that offers a TEE also answers evidence requests
    (chutes/evidence.py); one the miner runs serves its own log (chutes/instance_logs.py)."""

    def __init__(
        self, chute: Chute, evidence: EvidenceEndpoint | None = None, logs: LogsEndpoint | None = None
    ) -> None:
        self.chute = chute
        self.evidence = evidence
        self.logs = logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.evidence is not None and scope["type"] == "http" and scope["path"] == EVIDENCE_PATH:
            await self.evidence(scope, receive, send)
            return
        if self.logs is not None and scope["type"] == "http" and scope["path"] == LOGS_PATH:
            await self.logs(scope, receive, send)
            return
        await self.chute(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        # The app's own FastAPI lifespan (a `lifespan=` given to Chute, or `@chute.on_event`
        # handlers) runs too, inside the chute's hooks: hooks first at startup, last at shutdown.
        app_lifespan = contextlib.AsyncExitStack()
        try:
            await self.chute.initialize()
            await app_lifespan.enter_async_context(self.chute.router.lifespan_context(self.chute))
        except BaseException:
            await send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        if message["type"] != "lifespan.shutdown":
            return
        try:
            await app_lifespan.aclose()
            await self.chute.shutdown()
        except BaseException:
            await send({"type": "lifespan.shutdown.failed", "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})


def serve(chute: Chute, host: str, port: int, code: bytes | None = None) -> int:
    """Serve the chute until SIGINT/SIGTERM (`code`: the chute file, which TEE evidence
    measures). Exit status: 0 after a clean shutdown, 3 (uvicorn's
    startup-failure status, which it also exits with itself) when the chute could not start: a
    startup hook raised, or the port is taken."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the signal once it has shut down, so the process dies of it; a
            # chute whose shutdown hooks ran cleanly exits 0 instead (what supervisors expect).
            previous = {signum: signal.signal(signum, self.handle_exit) for signum in _STOP_SIGNALS}
            try:
                yield
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    # The platform decides (the deployed chute's `tee`): the miner gives TEE chutes' instances
    # its node key, and only them.
    evidence = EvidenceEndpoint.from_environment(code or b"")
    app = ChuteServer(chute, evidence, LogsEndpoint.from_environment())
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="info")
    server = Server(config)
    server.run()
    # uvicorn sets `started` only once the lifespan startup completed and the socket listens.
    return 0 if server.started else STARTUP_FAILURE


# ---- jobs --------------------------------------------------------------------------------------


class JobRunError(Exception):
    """The job cannot be started (unknown method, bad data); the message says why."""


def job_data_of(text: str | None) -> dict[str, Any]:
    """`--job-data`: a JSON object, or `@path` to a file holding one."""
    if not text:
        return {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise JobRunError(f"cannot read job data: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise JobRunError(f"job data is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise JobRunError("job data must be a JSON object (its keys become the job's keyword arguments)")
    return data


async def run_job(
    chute: Chute, method: str, data: dict[str, Any], job_status_url: str | None
) -> dict[str, Any]:
    """Initialize the chute, run one of its jobs to the end and shut it down again.

    The job reports to `job_status_url` itself (result, output uploads, `{"status": "done"}`);
    this returns the job's result dict. SIGTERM/SIGINT cancel the job (CancelledError; it reports
    nothing then, as in the SDK) and the shutdown hooks still run.
    """
    jobs = {job.name: job for job in chute.jobs}
    job = jobs.get(method)
    if job is None:
        known = ", ".join(sorted(jobs)) or "none"
        raise JobRunError(f"chute {chute.name} has no job {method!r} (jobs: {known})")
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        # As the runtime's POST /_shutdown does: the job's cancel event, then CancelledError.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, job.cancel)
    await chute.initialize()
    try:
        result: dict[str, Any] = await job.run(job_status_url=job_status_url, **data)
    finally:
        await chute.shutdown()
    return result
