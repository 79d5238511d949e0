"""Hugging Face cache checks the engine templates of the published SDK run before loading a model,
importable as `chutes.util.hf` (chute files call `verify_cache` and `purge_model_cache`).

`verify_cache` compares a downloaded snapshot with the file list and hashes of the repository at
that revision, as served by a repo-info endpoint (`PROXY_URL`, or CHUTES_HF_REPO_INFO_URL where a
deployment has its own): every file present, sizes and hashes equal, nothing extra. When the
endpoint cannot be reached the check is skipped (reported as `skipped_api_error`), as published:
an instance must not fail to start because a side service is down.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import httpx

logger = logging.getLogger(__name__)

PROXY_URL: Final = "https://proxy.chutes.ai/misc/hf_repo_info"
_CHUNK: Final = 8 * 1024 * 1024


def _repo_folder(repo_id: str) -> str:
    return f"models--{repo_id.replace('/', '--')}"


def purge_model_cache(repo_id: str, cache_dir: str = "/cache") -> bool:
    """Delete the cached copy of `repo_id` under `<cache_dir>/hub`; True if there was one."""
    path = Path(cache_dir) / "hub" / _repo_folder(repo_id)
    if not path.exists():
        return False
    logger.warning("purging the model cache at %s", path)
    shutil.rmtree(path, ignore_errors=True)
    return True


class CacheVerificationError(Exception):
    """The cached snapshot does not match the repository (`reason` says how)."""

    def __init__(
        self,
        message: str,
        reason: str = "verification_failed",
        repo_id: str | None = None,
        revision: str | None = None,
        mismatches: list[str] | None = None,
        missing: list[str] | None = None,
        extra: list[str] | None = None,
        errors: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.repo_id = repo_id
        self.revision = revision
        self.mismatches = mismatches or []
        self.missing = missing or []
        self.extra = extra or []
        self.errors = errors or []

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": True,
            "reason": self.reason,
            "message": str(self),
            "repo_id": self.repo_id,
            "revision": self.revision,
            "mismatches": self.mismatches,
            "missing": self.missing,
            "extra": self.extra,
            "errors": self.errors,
        }


def _get_hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")


def _get_symlink_hash(file_path: Path) -> str | None:
    """The hash a Hugging Face cache symlink's blob name carries (sha256 for LFS files, git sha1
    otherwise), or None for a regular file."""
    if file_path.is_symlink():
        name = Path(os.readlink(file_path)).name
        if len(name) in (40, 64):
            return name
    return None


def git_blob_hash(filepath: Path, chunk_size: int = _CHUNK) -> str:
    """Git's blob id of a file: sha1 of `blob <size>\\0` + content, read in chunks."""
    digest = hashlib.sha1(f"blob {filepath.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(filepath, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def compute_sha256(filepath: Path, chunk_size: int = _CHUNK) -> str:
    """sha256 of a file, read in chunks (LFS files are identified by it)."""
    digest = hashlib.sha256()
    with open(filepath, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


async def _repo_info(repo_id: str, revision: str) -> dict[str, Any] | None:
    params = {"repo_id": repo_id, "repo_type": "model", "revision": revision}
    token = _get_hf_token()
    if token:
        params["hf_token"] = token
    url = os.environ.get("CHUTES_HF_REPO_INFO_URL") or PROXY_URL
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(url, params=params)
    except httpx.HTTPError as error:
        logger.warning("cache verification skipped: repo info request failed: %s", error)
        return None
    if response.status_code == 404:
        raise CacheVerificationError(
            f"Repository or revision not found: {repo_id}@{revision} - {response.text}",
            reason="not_found",
            repo_id=repo_id,
            revision=revision,
        )
    if response.status_code in (401, 403):
        raise CacheVerificationError(
            f"Access denied to {repo_id}: {response.text}",
            reason="access_denied",
            repo_id=repo_id,
            revision=revision,
        )
    if response.status_code != 200:
        logger.warning("cache verification skipped: repo info answered %d", response.status_code)
        return None
    info: dict[str, Any] = response.json()
    return info


async def verify_cache(
    repo_id: str,
    revision: str,
    cache_dir: str = "/cache",
    full_hash_check: bool = False,
    max_workers: int = 4,
) -> dict[str, Any]:
    """Check `<cache_dir>/hub/models--org--name/snapshots/<revision>` against the repository.

    Hashes come from the cache's symlink names unless `full_hash_check` (or the file is not a
    symlink), in which case files are hashed, `max_workers` at a time. Returns counts
    (`verified`, `skipped`, `total`, `skipped_api_error`); raises CacheVerificationError listing
    mismatches, missing and extra files (paths under a `_` directory, the templates' caches, are
    not extra).
    """
    info = await _repo_info(repo_id, revision)
    if info is None:
        return {"verified": 0, "skipped": 0, "total": 0, "skipped_api_error": True}

    # path -> (expected hash, size, is LFS); directories have no hash.
    remote: dict[str, tuple[str | None, int | None, bool]] = {}
    for item in info["files"]:
        lfs = bool(item.get("is_lfs", False))
        remote[item["path"]] = (item.get("sha256") if lfs else item.get("blob_id"), item.get("size"), lfs)
    directories = info.get("directories")
    if directories is None:
        directories = {
            "/".join(parts[:i])
            for item in info["files"]
            for parts in [item["path"].split("/")]
            for i in range(1, len(parts))
        }
    for directory in directories:
        remote.setdefault(directory, (None, None, False))

    snapshot = Path(cache_dir) / "hub" / _repo_folder(repo_id) / "snapshots" / revision
    if not snapshot.exists():
        raise CacheVerificationError(
            f"Cache directory not found: {snapshot}",
            reason="cache_not_found",
            repo_id=repo_id,
            revision=revision,
        )
    local = {str(path.relative_to(snapshot)): path for path in snapshot.rglob("*")}

    verified = skipped = 0
    mismatches: list[str] = []
    missing: list[str] = []
    errors: list[str] = []
    to_hash: list[tuple[str, Path, str, bool]] = []  # (path, file, expected, is LFS)
    for name, (expected, size, lfs) in remote.items():
        path = local.get(name)
        if path is None or (not path.exists() and not path.is_symlink()):
            missing.append(name)
            continue
        if expected is None:
            skipped += 1
            continue
        resolved = path.resolve()
        if size is not None:
            try:
                actual = resolved.stat().st_size
            except OSError as error:
                errors.append(f"{name}: cannot stat: {error}")
                continue
            if actual != size:
                mismatches.append(f"{name}: size {actual} != expected {size}")
                continue
        link_hash = None if full_hash_check else _get_symlink_hash(path)
        if link_hash is not None:
            if link_hash == expected:
                verified += 1
            else:
                mismatches.append(f"{name}: hash {link_hash} != expected {expected}")
        elif lfs and not full_hash_check:
            errors.append(f"{name}: LFS file not a symlink, cannot fast-verify")
        else:
            to_hash.append((name, resolved, expected, lfs))

    def digest(item: tuple[str, Path, str, bool]) -> tuple[str, str | None, str, str | None]:
        name, file, expected, lfs = item
        try:
            return name, (compute_sha256(file) if lfs else git_blob_hash(file)), expected, None
        except OSError as error:
            return name, None, expected, str(error)

    if to_hash:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            results = await asyncio.gather(*(loop.run_in_executor(pool, digest, item) for item in to_hash))
        for name, computed, expected, failure in results:
            if failure:
                errors.append(f"{name}: hash computation failed: {failure}")
            elif computed != expected:
                mismatches.append(f"{name}: hash {computed} != expected {expected}")
            else:
                verified += 1

    extra = [
        name
        for name in local
        if name not in remote and not any(part.startswith("_") for part in Path(name).parts)
    ]
    if mismatches or missing or extra or errors:
        parts = [f"Cache verification failed for {repo_id}@{revision}"]
        for label, items, sep in (
            ("Mismatches", mismatches, "; "),
            ("Missing", missing, ", "),
            ("Extra", extra, ", "),
            ("Errors", errors, "; "),
        ):
            if items:
                parts.append(f"{label} ({len(items)}): " + sep.join(items))
        raise CacheVerificationError(
            "\n".join(parts),
            reason="integrity_mismatch",
            mismatches=mismatches,
            missing=missing,
            extra=extra,
            errors=errors,
            repo_id=repo_id,
            revision=revision,
        )
    logger.info("verified the Hugging Face cache of %s@%s", repo_id, revision)
    return {"verified": verified, "skipped": skipped, "total": len(remote), "skipped_api_error": False}
