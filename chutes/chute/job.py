"""Jobs: long-running functions of a chute (training runs, server rentals), declared with
`@chute.job(...)` (spec 3).

A job instance runs one job: the runtime calls `await job.run(job_status_url, **job_data)`, which
runs the function with an `output_dir`, reports the outcome to the job API, uploads the files the
function left in `output_dir`, and closes the job (spec 3.4, 3.5):

1. `POST {job_status_url}` `{"status", "result" | "detail", "output_filenames"}`; the answer's
   `output_storage_urls` maps each relative file name to its upload URL;
2. `PUT <upload url>` per file, multipart with fields `file` (the file, named by its basename)
   and `path` (the relative name), at most 8 at a time; a file that still fails after the
   retries is logged and skipped (the API then reports a partial failure);
3. `PUT {job_status_url}` `{"status": "done"}`.

Each call is retried (RETRY_ATTEMPTS tries, RETRY_DELAY_SECONDS apart, on any error or non-2xx
answer); steps 1 and 3 raise once the retries are used up.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import tempfile
import traceback
import warnings
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, field_validator, model_validator

if TYPE_CHECKING:
    from chutes.chute.base import Chute

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Tries per job API call, and the pause between them in seconds (a module variable so tests and
#: impatient runtimes can shorten it).
RETRY_ATTEMPTS: Final = 7
RETRY_DELAY_SECONDS: float = 10.0

#: Output files uploaded at the same time.
UPLOAD_CONCURRENCY: Final = 8

#: The port sshd listens on in a job instance with `ssh=True`.
SSH_PORT: Final = 2202

MIN_TIMEOUT: Final = 30
MAX_TIMEOUT: Final = 24 * 60 * 60

# Job API calls may wait on object storage; generous, but not unbounded.
_HTTP_TIMEOUT: Final = httpx.Timeout(300.0, connect=10.0)


class Port(BaseModel):
    """A port a job instance exposes: `name`, `port` (2202 or 8002-65535), `proto` (tcp/udp/http).

    As in the real SDK only the port number is checked; the intended name pattern
    (`^[a-z]+[0-9]*$`) and protocol list are documentation, so chute files that stray from them
    still load. `name` and `proto` may even be left out, as the published SDK allows (its
    defaults are placeholders): such a file loads and runs locally with a warning, and deploying
    it is refused with the fix, since the platform needs both.
    """

    name: str | None = None
    port: int
    proto: str | None = None

    @model_validator(mode="after")
    def _warn_incomplete(self) -> Port:
        if self.name is None or self.proto is None:
            warnings.warn(self.incomplete_message(), stacklevel=2)
        return self

    def incomplete_message(self) -> str:
        """What to add to a port without a name or protocol."""
        return (
            f"Port(port={self.port}) needs a name and a proto to deploy, e.g. "
            f"Port(name={self.name or 'web'!r}, port={self.port}, proto={self.proto or 'http'!r})"
        )

    @field_validator("port")
    @classmethod
    def _valid_port(cls, port: int) -> int:
        if port == SSH_PORT or 8002 <= port <= 65535:
            return port
        raise ValueError("Port must be 2202 or in range 8002-65535")


class Job:
    """A job of a chute; use it through `chute.job(**kwargs)` as a decorator, which returns the Job."""

    def __init__(
        self,
        app: Chute,
        ports: Sequence[Port | dict[str, Any]] | None = None,
        timeout: int | None = None,
        upload: bool | None = True,
        ssh: bool = False,
    ) -> None:
        self.app = app
        self._func: Callable[..., Any] | None = None
        self._name: str | None = None
        self._ssh = bool(ssh)
        self._upload = upload
        self.timeout = timeout
        self.ports = list(ports or [])
        # Set (e.g. by the runtime's /_shutdown) to cancel a running job.
        self.cancel_event = asyncio.Event()

    @property
    def name(self) -> str:
        """The decorated function's name (the job's method name at the API)."""
        if self._name is None:
            raise RuntimeError("this job has not decorated a function yet")
        return self._name

    @property
    def func(self) -> Callable[..., Any]:
        """The decorated user function."""
        if self._func is None:
            raise RuntimeError("this job has not decorated a function yet")
        return self._func

    @property
    def upload(self) -> bool:
        """Whether the files left in output_dir are uploaded when the job completes."""
        return bool(self._upload)

    @property
    def ssh(self) -> bool:
        """Whether the instance runs sshd on port 2202 (added to the ports)."""
        return self._ssh

    @property
    def timeout(self) -> int | None:
        """Seconds the job may run (30 to 86400), or None for no limit (e.g. a server rental)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not MIN_TIMEOUT <= value <= MAX_TIMEOUT
        ):
            raise ValueError(f"timeout must be None or an integer from {MIN_TIMEOUT} to {MAX_TIMEOUT}")
        self._timeout = value

    @property
    def ports(self) -> list[Port]:
        """The declared ports, plus the ssh port when `ssh=True`."""
        if self._ssh:
            return [*self._ports, Port(name="ssh", port=SSH_PORT, proto="tcp")]
        return list(self._ports)

    @ports.setter
    def ports(self, ports: Sequence[Port | dict[str, Any]]) -> None:
        validated: list[Port] = []
        for port in ports:
            if isinstance(port, dict):
                port = Port(**port)
            if not isinstance(port, Port):
                raise TypeError(f"a job port must be a Port or a dict, got {type(port).__name__}")
            validated.append(port)
        numbers = [port.port for port in validated] + ([SSH_PORT] if self._ssh else [])
        if len(numbers) != len(set(numbers)):
            raise ValueError(f"duplicate job port in {numbers} (ssh=True uses {SSH_PORT})")
        self._ports = validated

    def __call__(self, func: Callable[..., Any]) -> Job:
        self._func = func
        self._name = func.__name__
        return self

    def __repr__(self) -> str:
        return f"Job({self._name}, timeout={self._timeout}, ports={[p.port for p in self.ports]})"

    def to_dict(self) -> dict[str, Any]:
        """The job as the deploy request sends it (spec 3.3)."""
        return {
            "ports": [port.model_dump() for port in self.ports],
            "timeout": self.timeout,
            "name": self.name,
            "upload": self.upload,
        }

    def cancel(self) -> None:
        """Cancel the running job (as a user's DELETE /jobs/{id} does through the runtime)."""
        self.cancel_event.set()

    # ---- running --------------------------------------------------------------------------------

    async def run(self, job_status_url: str | None = None, **job_data: Any) -> dict[str, Any]:
        """Run the job and, given `job_status_url`, report it and upload its outputs (module doc).

        Raises CancelledError when cancelled through `cancel_event` and TimeoutError past the
        timeout; neither is reported (the API learns it from the instance going away).
        """
        output_dir = tempfile.mkdtemp()
        job_data["output_dir"] = output_dir
        # Libraries writing temporary files then write next to the outputs, on the job's disk.
        os.environ["TMPDIR"] = output_dir

        func = self.func
        work: Awaitable[Any] = (
            func(self.app, **job_data)
            if inspect.iscoroutinefunction(func)
            else asyncio.to_thread(func, self.app, **job_data)
        )
        job_task: asyncio.Task[Any] = asyncio.ensure_future(work)
        cancel_task = asyncio.create_task(self.cancel_event.wait())
        done, _ = await asyncio.wait(
            {job_task, cancel_task}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        cancel_task.cancel()
        if self.cancel_event.is_set() and job_task not in done:
            job_task.cancel()
            raise asyncio.CancelledError("Job was externally cancelled.")
        if job_task not in done:
            job_task.cancel()
            raise TimeoutError(f"Job [{self.name}] timed out after {self.timeout} seconds.")

        result: dict[str, Any]
        try:
            result = {"status": "complete", "result": job_task.result()}
        except asyncio.CancelledError:
            result = {"status": "cancelled", "detail": "Job was cancelled."}
        except Exception as error:
            result = {"status": "error", "detail": f"Job failed: {error}\n{traceback.format_exc()}"}
            logger.error("job %s failed: %s", self.name, error)

        if job_status_url:
            files: list[str] = []
            if self.upload and result["status"] == "complete":
                files = await asyncio.to_thread(_output_files, Path(output_dir))
            result["output_filenames"] = files
            await self._report(job_status_url, result, Path(output_dir))
        return result

    async def _report(self, job_status_url: str, result: dict[str, Any], output_dir: Path) -> None:
        async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT) as client:

            async def finish() -> dict[str, Any]:
                response = await client.post(job_status_url, json=jsonable_encoder(result))
                response.raise_for_status()
                answer = response.json() if response.content.strip() else {}
                return answer if isinstance(answer, dict) else {}

            answer = await _with_retries("report the job outcome", finish)
            urls = answer.get("output_storage_urls") or {}
            if not isinstance(urls, dict):
                logger.error("job API sent output_storage_urls as %s, not a mapping", type(urls).__name__)
                urls = {}
            wanted = set(result["output_filenames"])
            targets = {name: url for name, url in urls.items() if name in wanted}
            if targets:
                limit = asyncio.Semaphore(UPLOAD_CONCURRENCY)

                async def upload(name: str, url: str) -> None:
                    async with limit:
                        try:
                            await _with_retries(
                                f"upload {name}", lambda: _put_file(client, url, output_dir, name)
                            )
                        except Exception as error:
                            logger.error("giving up on output file %s: %s", name, error)

                await asyncio.gather(*(upload(name, url) for name, url in targets.items()))

            async def close() -> None:
                response = await client.put(job_status_url, json={"status": "done"})
                response.raise_for_status()

            await _with_retries("mark the job done", close)


def _output_files(output_dir: Path) -> list[str]:
    """Every regular file under output_dir, as sorted relative POSIX paths."""
    return sorted(
        path.relative_to(output_dir).as_posix()
        for path in output_dir.rglob("*")
        if path.is_file() and not path.is_symlink()
    )


async def _put_file(client: httpx.AsyncClient, url: str, output_dir: Path, name: str) -> None:
    path = output_dir / name
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        response = await client.put(url, data={"path": name}, files={"file": (path.name, handle)})
        response.raise_for_status()
    finally:
        handle.close()


async def _with_retries(what: str, call: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return await call()
        except Exception as error:
            if attempt == RETRY_ATTEMPTS:
                raise
            logger.warning("could not %s (try %d of %d): %s", what, attempt, RETRY_ATTEMPTS, error)
            await asyncio.sleep(RETRY_DELAY_SECONDS)
    raise AssertionError("unreachable")
