"""Where job output files live: one interface, two backends.

- `LocalStorage` (the default): files under `{data_dir}/job-files/{key}`. A write goes to a
  temporary file in `.incoming/` and is renamed onto the key only once the last chunk is
  written, so an upload cut off halfway leaves nothing under the key (and the temporary file is
  removed when the write fails or is cancelled).
- `ObjectStorage`: an S3-compatible bucket (`CHUTES_JOB_STORAGE_URL=s3://bucket[/prefix]`, with
  `CHUTES_JOB_STORAGE_ENDPOINT` and the credential settings), through obstore. A write is a
  multipart upload completed only after the last chunk: a failed or cancelled one never becomes
  a visible object.

Both read as a stream of chunks, so no file is ever held in memory.

Why obstore rather than aiobotocore: both stream asynchronously, but obstore (Rust's
object_store behind a small Python API) takes an async iterable for `put_async` and does the
multipart upload itself (create, parts in parallel, complete at the end, abort on error), where
aiobotocore needs that protocol written by hand; obstore ships its own type stubs (aiobotocore
needs the separate types-aiobotocore-s3), and it is one wheel without dependencies, where
aiobotocore brings botocore (~100 MB installed) and aiohttp.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from services.kit.settings import Settings

#: Size of the chunks a read yields (and of S3 multipart parts).
CHUNK_BYTES = 1024 * 1024
#: S3 multipart: part size and parts in flight (memory held per upload <= their product).
PART_BYTES = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4


class StorageNotFound(Exception):
    """No object has that key."""


class Storage(Protocol):
    """Job output files by key (`jobs/{chute_id}/{day}/{job_id}/outputs/{filename}`)."""

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the chunks under `key`, all or nothing, and return the size. If iterating
        `chunks` raises, nothing is stored and the error propagates."""
        ...

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes as chunks; raises StorageNotFound before yielding anything."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete these keys; missing ones are ignored."""
        ...


def valid_key(key: str) -> bool:
    """Relative, no empty, `.` or `..` segment, no NUL: safe as a path under a root."""
    parts = key.split("/")
    return bool(key) and "\0" not in key and all(part not in ("", ".", "..") for part in parts)


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.incoming = self.root / ".incoming"

    def path_of(self, key: str) -> Path:
        if not valid_key(key) or key.startswith(".incoming"):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        target = self.path_of(key)
        self.incoming.mkdir(parents=True, exist_ok=True)
        temporary = self.incoming / uuid.uuid4().hex
        size = 0
        try:
            # Writes land in the page cache: cheaper in the loop than a thread hop per chunk.
            with temporary.open("wb") as out:
                async for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return size

    async def open(self, key: str) -> AsyncIterator[bytes]:
        try:
            handle = self.path_of(key).open("rb")
        except (FileNotFoundError, ValueError):
            raise StorageNotFound(key) from None
        return self._read(handle)

    @staticmethod
    async def _read(handle: BinaryIO) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                path = self.path_of(key)
            except ValueError:
                continue
            path.unlink(missing_ok=True)
            # Empty job folders go too (up to, not including, the root).
            parent = path.parent
            while parent != self.root and parent.is_relative_to(self.root):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent


class ObjectStorage:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        await obstore.put_async(
            self.store,
            key,
            counted(),
            use_multipart=True,
            chunk_size=PART_BYTES,
            max_concurrency=PARTS_IN_FLIGHT,
        )
        return size

    async def open(self, key: str) -> AsyncIterator[bytes]:
        try:
            result = await obstore.get_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            raise StorageNotFound(key) from None
        return self._read(result.stream(min_chunk_size=CHUNK_BYTES))

    @staticmethod
    async def _read(stream: AsyncIterable[object]) -> AsyncIterator[bytes]:
        async for chunk in stream:
            yield bytes(chunk)  # type: ignore[call-overload]

    async def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 100):
            batch = list(keys[start : start + 100])
            if batch:
                await obstore.delete_async(self.store, batch)


def s3_store(
    url: str,
    *,
    endpoint: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    region: str = "us-east-1",
) -> S3Store:
    """An S3Store for `s3://bucket[/prefix]` (path-style requests when an endpoint is given, as
    MinIO, moto and most S3-compatible stores want)."""
    if not url.startswith("s3://") or not url[5:].strip("/"):
        raise ValueError(f"job storage URL must be s3://bucket[/prefix], not {url!r}")
    bucket, _, prefix = url[5:].strip("/").partition("/")
    options: dict[str, object] = {"region": region}
    if endpoint:
        options["endpoint"] = endpoint
        options["virtual_hosted_style_request"] = False
    if access_key_id:
        options["access_key_id"] = access_key_id
    if secret_access_key:
        options["secret_access_key"] = secret_access_key
    return S3Store(
        bucket,
        prefix=prefix or None,
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            # A download streams as long as the client reads; the default 30 s would cut it.
            "timeout": timedelta(hours=24),
            "connect_timeout": timedelta(seconds=10),
        },
        **options,  # type: ignore[arg-type]
    )


def storage_from(settings: Settings) -> Storage:
    """The backend the settings choose (module doc)."""
    if settings.job_storage_url:
        return ObjectStorage(
            s3_store(
                settings.job_storage_url,
                endpoint=settings.job_storage_endpoint,
                access_key_id=settings.job_storage_access_key_id,
                secret_access_key=settings.job_storage_secret_access_key,
                region=settings.job_storage_region,
            )
        )
    return LocalStorage(settings.data_dir / "job-files")
