"""Jobs through the real suite (`chutes-suite up`, real Envoy): the seven routes of spec 5.

The shared suite runs no miner, so no instance runs a job there: the tests play the instance with
job tokens minted from the suite's secret (CHUTES_JOB_TOKEN_SECRET, tests/conftest.py), reporting
as the SDK does (POST outcome, multipart PUT uploads through the gateway, PUT {"status": "done"}).
Output files are checked byte for byte and in the storage directory; the S3 backend is tested
against a real S3 HTTP endpoint (moto's standalone server) at the storage interface and through a
suite of its own. The sweeper's rule is tested as the pure function it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import psutil
import pytest

from chutes.registry.v1 import internal_pb2
from services.jobs import dispatch
from services.jobs.storage import LocalStorage, ObjectStorage, StorageNotFound, s3_store
from tests.conftest import RunningSuite, free_port, start_suite, suite_env, suite_with_miner, wait_for
from tests.test_identity import Hotkey, User, admin, new_user
from tests.test_registry import SDK_VERSION, deploy_body, deployed, detail, key

ROOT = Path(__file__).resolve().parent.parent
CHUTES = str(Path(sys.executable).parent / "chutes")
JOB = {"name": "train", "upload": True, "ports": [], "timeout": 60}


def file_id(job_id: str, filename: str) -> str:
    return str(uuid.uuid5(uuid.UUID(job_id), filename))


def mint(suite: RunningSuite, job_id: str, filename: str | None = None, secret: str | None = None) -> str:
    claims: dict[str, Any] = {"sub": job_id, "iat": int(time.time()), "iss": "chutes"}
    if filename is not None:
        claims["filename"] = filename
    return jwt.encode(claims, secret or suite.env["CHUTES_JOB_TOKEN_SECRET"], algorithm="HS256")


def storage_dir(suite: RunningSuite) -> Path:
    return Path(suite.env["CHUTES_DATA_DIR"]) / "job-files"


def deployer(suite: RunningSuite) -> User:
    """A user with the balance for deployment fees and the image `{username}/jobs-base:1.0`."""
    hotkey = Hotkey.new()
    username = "job" + uuid.uuid4().hex[:8]
    made = admin(suite, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100")
    image = ["--name", "jobs-base", "--tag", "1.0", "--chutes-version", SDK_VERSION]
    admin(suite, "add-image", "--username", username, *image)
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


@pytest.fixture(scope="module")
def http(suite: RunningSuite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=suite.gateway, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def owner(suite: RunningSuite) -> User:
    return deployer(suite)


@pytest.fixture(scope="module")
def friend(suite: RunningSuite) -> User:
    return new_user(suite)


def deploy_job_chute(http: httpx.Client, owner: User, name: str) -> dict[str, Any]:
    body = deploy_body(
        name + "-" + uuid.uuid4().hex[:6], f"{owner.username}/jobs-base:1.0", cords=[], jobs=[JOB]
    )
    return deployed(http, owner, body)


@pytest.fixture(scope="module")
def chute(http: httpx.Client, owner: User) -> dict[str, Any]:
    return deploy_job_chute(http, owner, "trainer")


def create(
    http: httpx.Client, user: User, chute_id: str, args: dict[str, Any] | None = None
) -> httpx.Response:
    return http.post(f"/jobs/{chute_id}/train", json=args or {}, headers=key(user))


def created(
    http: httpx.Client, user: User, chute_id: str, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = create(http, user, chute_id, args)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


class Instance:
    """Plays a job's instance: the SDK's calls, with its token, through the gateway."""

    def __init__(self, http: httpx.Client, suite: RunningSuite, job_id: str) -> None:
        self.http, self.suite, self.job_id = http, suite, job_id
        self.token = mint(suite, job_id)

    def finish(self, outcome: dict[str, Any], token: str | None = None) -> httpx.Response:
        return self.http.post(f"/jobs/{self.job_id}", params={"token": token or self.token}, json=outcome)

    def upload(self, url: str, name: str, data: bytes) -> httpx.Response:
        # The SDK's form: `file` named by its basename, `path` the relative name.
        return self.http.put(url, data={"path": name}, files={"file": (Path(name).name, data)})

    def complete(self, token: str | None = None) -> httpx.Response:
        return self.http.put(
            f"/jobs/{self.job_id}", params={"token": token or self.token}, json={"status": "done"}
        )


# ---- create, read -------------------------------------------------------------------------------


def test_create_answers_the_job(http: httpx.Client, owner: User, friend: User, chute: dict[str, Any]) -> None:
    job = created(http, owner, chute["chute_id"], {"steps": 2, "name": "run"})
    assert uuid.UUID(job["job_id"]).version == 4
    assert (job["user_id"], job["chute_id"], job["method"]) == (owner.user_id, chute["chute_id"], "train")
    assert (job["version"], job["chutes_version"]) == (chute["version"], SDK_VERSION)
    assert job["job_args"] == {"steps": 2, "name": "run", "_disk_gb": 10}
    assert job["status"] == "pending" and job["error_detail"] == "" and job["instance_id"] == ""
    assert job["active"] is False and job["verified"] is False
    assert job["output_storage_urls"] == {} and job["port_mappings"] == []
    assert job.get("finished_at") is None and job.get("result") is None and job.get("output_files") is None
    assert job["chute"]["chute_id"] == chute["chute_id"] and job["chute"]["name"] == chute["name"]
    assert job["chute"]["slug"] == chute["slug"] and job["chute"]["image"]["name"] == "jobs-base"
    assert job["created_at"]

    got = http.get(f"/jobs/{job['job_id']}", headers=key(owner))
    assert got.status_code == 200 and got.json()["job_id"] == job["job_id"]
    assert detail(http.get(f"/jobs/{job['job_id']}", headers=key(friend)), 404) == (
        "Job not found, or does not belong to you"
    )
    assert http.get(f"/jobs/{job['job_id']}").status_code == 401


def test_create_404s(http: httpx.Client, owner: User, friend: User, chute: dict[str, Any]) -> None:
    chute_id = chute["chute_id"]
    expected = f"Chute {chute_id} not found"
    assert detail(create(http, friend, chute_id), 404) == expected  # private, not shared
    assert detail(http.post(f"/jobs/{chute_id}/nope", json={}, headers=key(owner)), 404) == expected
    cords = deployed(
        http, owner, deploy_body("cords-" + uuid.uuid4().hex[:6], f"{owner.username}/jobs-base:1.0")
    )
    # `echo` is a cord of that chute, not a job.
    response = http.post(f"/jobs/{cords['chute_id']}/echo", json={}, headers=key(owner))
    assert detail(response, 404) == f"Chute {cords['chute_id']} not found"
    missing = str(uuid.uuid4())
    assert detail(create(http, owner, missing), 404) == f"Chute {missing} not found"


@pytest.mark.parametrize("disk", [5, 10, 1000, "big", True])
def test_disk_gb_out_of_range_is_400(
    http: httpx.Client, owner: User, chute: dict[str, Any], disk: object
) -> None:
    assert (
        detail(create(http, owner, chute["chute_id"], {"_disk_gb": disk}), 400)
        == "Invalid disk size specified"
    )


def test_disk_gb_is_kept_as_an_integer(http: httpx.Client, owner: User, chute: dict[str, Any]) -> None:
    job = created(http, owner, chute["chute_id"], {"_disk_gb": 20.0})
    assert job["job_args"]["_disk_gb"] == 20


def test_daily_quota_rows(http: httpx.Client, suite: RunningSuite, owner: User, database_url: str) -> None:
    limited = deploy_job_chute(http, owner, "limited")
    blocked = deploy_job_chute(http, owner, "blocked")

    async def set_quotas() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.executemany(
                "INSERT INTO jobs.job_quotas (user_id, chute_id, quota) VALUES ($1, $2, $3)",
                [(owner.user_id, limited["chute_id"], 1), (owner.user_id, blocked["chute_id"], 0)],
            )
        finally:
            await connection.close()

    asyncio.run(set_quotas())
    created(http, owner, limited["chute_id"])
    assert detail(create(http, owner, limited["chute_id"]), 429).startswith("Daily job quota exceeded: ")
    assert detail(create(http, owner, blocked["chute_id"]), 429).startswith("Daily job quota exceeded: ")


# ---- the instance's side --------------------------------------------------------------------------


def test_a_job_reports_uploads_completes_and_is_deleted(
    http: httpx.Client, suite: RunningSuite, owner: User, friend: User, chute: dict[str, Any]
) -> None:
    job_id = created(http, owner, chute["chute_id"], {"steps": 3})["job_id"]
    instance = Instance(http, suite, job_id)
    files = {
        "model.bin": os.urandom(3 * 1024 * 1024 + 17),
        "logs/train.jsonl": b'{"step": 1}\n',
        "empty": b"",
    }
    finished = instance.finish(
        {"status": "complete", "result": {"loss": 0.125}, "output_filenames": list(files)}
    )
    assert finished.status_code == 200, finished.text
    body = finished.json()
    assert body["status"] == "complete_pending_uploads" and body["result"] == {"loss": 0.125}
    urls = body["output_storage_urls"]
    assert set(urls) == set(files) and all(
        u.startswith(f"{suite.gateway}/jobs/{job_id}/upload?token=") for u in urls.values()
    )
    day = body["created_at"][:10]
    assert body["output_files"] == {
        file_id(job_id, name): {
            "filename": name,
            "path": f"jobs/{chute['chute_id']}/{day}/{job_id}/outputs/{name}",
            "uploaded": False,
        }
        for name in files
    }

    for name, data in files.items():
        uploaded = instance.upload(urls[name], name, data)
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json() == {
            "status": "success",
            "filename": name,
            "file_id": file_id(job_id, name),
            "path": f"jobs/{chute['chute_id']}/{day}/{job_id}/outputs/{name}",
            "uploaded": True,
        }
        assert (storage_dir(suite) / uploaded.json()["path"]).read_bytes() == data
    completed = instance.complete()
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "complete" and completed.json()["finished_at"]
    assert detail(instance.finish({"status": "complete"}), 400) == "Job already finished"
    assert detail(instance.complete(), 400) == "Job already finished"

    for name, data in files.items():
        path = f"/jobs/{job_id}/download/{file_id(job_id, name)}"
        download = http.get(path, headers=key(owner))
        assert download.status_code == 200, download.text
        assert download.content == data
        assert download.headers["content-type"] == "application/octet-stream"
        assert download.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert detail(http.get(path, headers=key(friend)), 404) == "Job not found, or does not belong to you"
    assert http.get(f"/jobs/{job_id}/download/{uuid.uuid4()}", headers=key(owner)).status_code == 404

    assert detail(http.delete(f"/jobs/{job_id}", headers=key(friend)), 404) == (
        f"Job {job_id} not found or does not belong to you"
    )
    deleted = http.delete(f"/jobs/{job_id}", headers=key(owner))
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True, "job_id": job_id})
    assert (
        http.get(f"/jobs/{job_id}/download/{file_id(job_id, 'model.bin')}", headers=key(owner)).status_code
        == 404
    )
    assert http.get(f"/jobs/{job_id}", headers=key(owner)).status_code == 404
    assert not list((storage_dir(suite) / "jobs" / chute["chute_id"]).rglob(f"*{job_id}*"))
    assert instance.complete().status_code == 401  # the token died with the job


def test_a_job_token_is_good_for_its_own_job_only(
    http: httpx.Client, suite: RunningSuite, owner: User, chute: dict[str, Any]
) -> None:
    job_a = created(http, owner, chute["chute_id"])["job_id"]
    job_b = created(http, owner, chute["chute_id"])["job_id"]
    a, b = Instance(http, suite, job_a), Instance(http, suite, job_b)
    urls = a.finish({"status": "complete", "output_filenames": ["a.txt", "b.txt"]}).json()[
        "output_storage_urls"
    ]
    assert b.finish({"status": "complete", "output_filenames": ["a.txt"]}).status_code == 200

    # A's tokens on B's routes.
    assert b.finish({"status": "complete"}, token=a.token).status_code == 401
    assert b.complete(token=a.token).status_code == 401
    a_file_token = urls["a.txt"].split("token=", 1)[1]
    response = http.put(
        f"/jobs/{job_b}/upload",
        params={"token": a_file_token},
        data={"path": "a.txt"},
        files={"file": ("a.txt", b"x")},
    )
    assert response.status_code == 401
    # A file token for a.txt cannot upload b.txt, finish or complete.
    assert a.upload(urls["a.txt"], "b.txt", b"not a").status_code == 401
    assert a.finish({"status": "complete"}, token=a_file_token).status_code == 401
    assert a.complete(token=a_file_token).status_code == 401
    # Forged and malformed tokens.
    assert a.complete(token=mint(suite, job_a, secret="x" * 32)).status_code == 401
    assert detail(a.complete(token="garbage"), 401) == "Missing or invalid JWT"
    assert http.put(f"/jobs/{job_a}", json={"status": "done"}).status_code == 401
    assert http.get(f"/jobs/{job_a}", headers=key(owner)).json()["status"] == "complete_pending_uploads"
    assert not list(storage_dir(suite).rglob(f"{job_b}/outputs/*"))


def test_missing_uploads_are_a_partial_failure_and_errors_keep_their_detail(
    http: httpx.Client, suite: RunningSuite, owner: User, chute: dict[str, Any]
) -> None:
    partial = Instance(http, suite, created(http, owner, chute["chute_id"])["job_id"])
    urls = partial.finish({"status": "complete", "result": 1, "output_filenames": ["a.txt", "b.txt"]}).json()[
        "output_storage_urls"
    ]
    assert partial.upload(urls["a.txt"], "a.txt", b"a").status_code == 200
    body = partial.complete().json()
    assert (body["status"], body["error_detail"]) == ("partial_failure", "Failed to upload files: b.txt")

    failed = Instance(http, suite, created(http, owner, chute["chute_id"])["job_id"])
    body = failed.finish({"status": "error", "detail": "Job failed: diverged", "output_filenames": []}).json()
    assert body["status"] == "error" and body["result"] == "error" and body["output_storage_urls"] == {}
    body = failed.complete().json()
    assert (body["status"], body["error_detail"]) == ("error", "Job failed: diverged")


def test_an_upload_cut_off_halfway_leaves_no_file(
    http: httpx.Client, suite: RunningSuite, owner: User, chute: dict[str, Any]
) -> None:
    job_id = created(http, owner, chute["chute_id"])["job_id"]
    instance = Instance(http, suite, job_id)
    url = instance.finish({"status": "complete", "output_filenames": ["big.bin"]}).json()[
        "output_storage_urls"
    ]["big.bin"]
    boundary = "cutoffboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nbig.bin\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    payload = os.urandom(4 * 1024 * 1024)
    body_length = len(head) + len(payload) + len(tail)
    target = url.removeprefix(suite.gateway)
    host, port = suite.gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(
            (
                f"PUT {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {body_length}\r\n\r\n"
            ).encode()
            + head
            + payload[: len(payload) // 2]
        )
        time.sleep(0.5)
    key_path = storage_dir(suite) / f"jobs/{chute['chute_id']}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and list((storage_dir(suite) / ".incoming").glob("*")):
        time.sleep(0.1)
    assert not list((storage_dir(suite) / ".incoming").glob("*"))
    assert not list(key_path.rglob(f"{job_id}/outputs/big.bin"))
    job = http.get(f"/jobs/{job_id}", headers=key(owner)).json()
    assert job["output_files"][file_id(job_id, "big.bin")]["uploaded"] is False
    # The same upload, whole, then works.
    assert instance.upload(url, "big.bin", payload).status_code == 200


# ---- end to end: the CLI and the example chute ---------------------------------------------------


def cli(suite: RunningSuite, user: User, home: Path) -> Any:
    """`chutes ...` as `user` on `suite` (API key, no config file); returns stdout, asserts exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env.update(
        HOME=str(home),
        CHUTES_CONFIG_PATH=str(home / "none.ini"),
        CHUTES_API_URL=suite.gateway,
        CHUTES_API_KEY=user.api_key,
        CHUTES_USERNAME=user.username,
        CHUTES_IMAGE=f"{user.username}/jobs-base:1.0",
    )

    def chutes(*args: str) -> str:
        result = subprocess.run(
            [CHUTES, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert result.returncode == 0, f"chutes {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result.stdout

    return chutes


def example_model(steps: int, seed: int) -> bytes:
    """What examples/job_chute.py writes to model.bin."""
    return bytes((seed + step * 31 + i) % 256 for step in range(steps) for i in range(256))


def test_the_example_job_runs_through_the_cli_and_chutes_run(
    suite: RunningSuite, owner: User, tmp_path: Path
) -> None:
    """`chutes deploy` the example, `chutes jobs create`, the job run by `chutes run --job-*` (as
    an instance runs it) reporting through the gateway, then `chutes jobs get|download|delete`."""
    chutes = cli(suite, owner, tmp_path)
    chutes("deploy", "examples/job_chute:chute", "--accept-fee")
    chute_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{owner.username}::chute::job-example"))
    job = json.loads(chutes("jobs", "create", chute_id, "train", "--data", '{"steps": 3, "seed": 7}'))
    job_id = job["job_id"]
    status_url = f"{suite.gateway}/jobs/{job_id}?token={mint(suite, job_id)}"
    ran = json.loads(
        chutes(
            "run", "examples/job_chute:chute", "--job-method", "train", "--job-id", job_id,
            "--job-data", json.dumps(dispatch.job_data_of(job["job_args"])), "--job-status-url", status_url,
        ).strip().splitlines()[-1]
    )  # fmt: skip
    assert ran["status"] == "complete" and ran["output_filenames"] == ["logs/train.jsonl", "model.bin"]

    got = json.loads(chutes("jobs", "get", job_id))
    assert got["status"] == "complete" and got["result"] == {"steps": 3, "loss": 0.125, "model_bytes": 768}
    assert all(entry["uploaded"] for entry in got["output_files"].values())
    saved = chutes(
        "jobs", "download", job_id, file_id(job_id, "model.bin"), "--output", str(tmp_path / "m.bin")
    )
    assert "Saved 768 bytes" in saved
    assert (tmp_path / "m.bin").read_bytes() == bytes(
        (7 + step * 31 + i) % 256 for step in range(3) for i in range(256)
    )
    assert f"Deleted job {job_id}" in chutes("jobs", "delete", job_id, "--yes")
    assert not list(storage_dir(suite).rglob(f"{job_id}/outputs/*"))


# ---- the sweeper's rule ------------------------------------------------------------------------


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def row(**changes: Any) -> dict[str, Any]:
    base = {"created_at": NOW - timedelta(seconds=30), "scheduled_at": NOW, "started_at": None, "timeout": 60}
    return {**base, **changes}


def placement(state: int, **fields: Any) -> internal_pb2.JobPlacement:
    return internal_pb2.JobPlacement(job_id="j", state=state, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("job", "where", "expected"),
    [
        (row(scheduled_at=None), None, dispatch.Decision("schedule")),
        (row(), None, dispatch.Decision("schedule")),  # the registry lost it: idempotent again
        (row(), placement(dispatch.PENDING), dispatch.Decision("wait")),
        (row(), placement(dispatch.RUNNING, instance_id="i"), dispatch.Decision("track")),
        (
            row(),
            placement(dispatch.ENDED, reason="its node was lost"),
            dispatch.Decision("fail", "Instance was terminated: its node was lost"),
        ),
        (
            row(started_at=NOW - timedelta(seconds=61)),
            placement(dispatch.RUNNING),
            dispatch.Decision("fail", "Job timed out after 60 s", cancel=True),
        ),
        (
            row(started_at=NOW - timedelta(seconds=61), timeout=None),
            placement(dispatch.RUNNING),
            dispatch.Decision("track"),
        ),
        (
            row(created_at=NOW - timedelta(hours=2)),
            placement(dispatch.PENDING),
            dispatch.Decision("fail", "Job was not placed on any node within 3600 s", cancel=True),
        ),
        (
            row(created_at=NOW - timedelta(hours=2), scheduled_at=None),
            None,
            dispatch.Decision("fail", "Job was not placed on any node within 3600 s", cancel=True),
        ),
    ],
)
def test_the_sweepers_rule(
    job: dict[str, Any], where: internal_pb2.JobPlacement | None, expected: dispatch.Decision
) -> None:
    assert dispatch.decide(job, where, NOW, 3600.0) == expected


def test_jobs_stay_pending_while_the_registry_cannot_take_them(
    http: httpx.Client, owner: User, chute: dict[str, Any]
) -> None:
    """Without a miner (and while the registry answers UNIMPLEMENTED or has no node), a job is
    pending, and the sweeper's retries leave it so."""
    job_id = created(http, owner, chute["chute_id"])["job_id"]
    time.sleep(2.5)
    job = http.get(f"/jobs/{job_id}", headers=key(owner)).json()
    assert job["status"] == "pending" and job.get("finished_at") is None


# ---- storage: local and S3 ------------------------------------------------------------------------


async def _chunks(data: bytes, size: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for sent, start in enumerate(range(0, len(data), size)):
        if fail_after is not None and sent == fail_after:
            raise ConnectionResetError("client went away")
        yield data[start : start + size]
        await asyncio.sleep(0)


async def _exercise(storage: LocalStorage | ObjectStorage) -> None:
    data = os.urandom(20 * 1024 * 1024 + 5)  # three S3 parts
    assert await storage.write("jobs/c/2026-01-01/j/outputs/a/b.bin", _chunks(data, 256 * 1024)) == len(data)
    read = b"".join([chunk async for chunk in await storage.open("jobs/c/2026-01-01/j/outputs/a/b.bin")])
    assert read == data
    with pytest.raises(ConnectionResetError):
        await storage.write("jobs/c/2026-01-01/j/outputs/cut.bin", _chunks(data, 1024 * 1024, fail_after=10))
    with pytest.raises(StorageNotFound):
        await storage.open("jobs/c/2026-01-01/j/outputs/cut.bin")
    await storage.delete(["jobs/c/2026-01-01/j/outputs/a/b.bin", "jobs/c/2026-01-01/j/outputs/never"])
    with pytest.raises(StorageNotFound):
        await storage.open("jobs/c/2026-01-01/j/outputs/a/b.bin")


def test_local_storage(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "job-files")
    asyncio.run(_exercise(storage))
    assert not [p for p in (tmp_path / "job-files").rglob("*") if p.is_file()]
    with pytest.raises(ValueError):
        storage.path_of("../escape")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
    )
    client.create_bucket(Bucket="jobs")
    try:
        yield endpoint
    finally:
        server.stop()


def test_s3_storage_against_a_real_endpoint(s3_endpoint: str) -> None:
    store = s3_store("s3://jobs/suite", endpoint=s3_endpoint, access_key_id="k", secret_access_key="s")
    asyncio.run(_exercise(ObjectStorage(store)))


def test_upload_and_download_on_the_s3_backend(s3_endpoint: str, database_url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="chutes-test-jobs-s3-") as tmp:
        env = suite_env(Path(tmp), database_url)
        env.update(
            CHUTES_JOB_STORAGE_URL="s3://jobs/s3-suite",
            CHUTES_JOB_STORAGE_ENDPOINT=s3_endpoint,
            CHUTES_JOB_STORAGE_ACCESS_KEY_ID="k",
            CHUTES_JOB_STORAGE_SECRET_ACCESS_KEY="s",
        )
        s3_suite = start_suite(env)
        try:
            with httpx.Client(base_url=s3_suite.gateway, timeout=30) as http:
                user = deployer(s3_suite)
                chute_id = deploy_job_chute(http, user, "s3")["chute_id"]
                job_id = created(http, user, chute_id)["job_id"]
                instance = Instance(http, s3_suite, job_id)
                data = os.urandom(9 * 1024 * 1024)
                urls = instance.finish({"status": "complete", "output_filenames": ["w.bin"]}).json()[
                    "output_storage_urls"
                ]
                assert instance.upload(urls["w.bin"], "w.bin", data).status_code == 200
                assert instance.complete().json()["status"] == "complete"
                path = f"/jobs/{job_id}/download/{file_id(job_id, 'w.bin')}"
                download = http.get(path, headers=key(user))
                assert download.status_code == 200 and download.content == data
                assert download.headers["content-disposition"] == 'attachment; filename="w.bin"'
                assert not (Path(tmp) / "job-files").exists()
                assert http.delete(f"/jobs/{job_id}", headers=key(user)).json()["deleted"] is True
                assert http.get(path, headers=key(user)).status_code == 404
        finally:
            s3_suite.stop()


# ---- through up's local miner ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mined(database_url: str) -> Iterator[RunningSuite]:
    """A suite of its own (own database) whose local miner runs job instances on this machine."""
    with suite_with_miner(database_url, "jobs") as running:
        yield running


def job_processes(suite: RunningSuite, job_id: str) -> list[psutil.Process]:
    """The `chutes run --job-*` processes running this job."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "--job-method" in cmdline and job_id in cmdline:
            found.append(process)
    return found


def test_jobs_run_on_the_local_miner(mined: RunningSuite, tmp_path: Path) -> None:
    """The example job runs on an instance the local miner starts, reports, uploads and completes;
    a deleted job's instance stops within 5 s; a job whose instance dies ends in error."""
    user = deployer(mined)
    cli(mined, user, tmp_path)("deploy", "examples/job_chute:chute", "--accept-fee")
    chute_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{user.username}::chute::job-example"))
    with httpx.Client(base_url=mined.gateway, timeout=30) as http:

        def job(job_id: str) -> dict[str, Any]:
            answer: dict[str, Any] = http.get(f"/jobs/{job_id}", headers=key(user)).json()
            return answer

        done = created(http, user, chute_id, {"steps": 2, "seed": 5})["job_id"]
        finished = wait_for("the job completes", lambda: job(done).get("finished_at") and job(done), 90)
        assert finished["status"] == "complete", finished
        assert finished["result"] == {"steps": 2, "loss": 0.25, "model_bytes": 512}
        for name, expected in (("model.bin", example_model(2, 5)), ("logs/train.jsonl", None)):
            download = http.get(f"/jobs/{done}/download/{file_id(done, name)}", headers=key(user))
            assert download.status_code == 200
            assert download.content == expected if expected else download.content.count(b"\n") == 2
        assert wait_for("the instance exits", lambda: not job_processes(mined, done), 30)

        deleted = created(http, user, chute_id, {"sleep": 300})["job_id"]
        wait_for("the long job runs", lambda: job_processes(mined, deleted), 60)
        assert http.delete(f"/jobs/{deleted}", headers=key(user)).json() == {
            "deleted": True,
            "job_id": deleted,
        }
        assert wait_for("the deleted job's instance stops", lambda: not job_processes(mined, deleted), 5)

        killed = created(http, user, chute_id, {"sleep": 300})["job_id"]
        for process in wait_for("the job runs", lambda: job_processes(mined, killed), 60):
            process.kill()
        ended = wait_for("the job ends", lambda: job(killed).get("finished_at") and job(killed), 30)
        assert ended["status"] == "error" and ended["error_detail"].startswith("Instance was terminated: ")
