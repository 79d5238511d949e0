"""Chutes run on `chutes-suite up`'s local miner: from deploy to a hot chute and back to nothing.

A suite of its own (its own database, the local miner on: a simulated inventory of two pro_6000 on
this GPU-less machine), the echo chute of examples/ deployed over REST. Everything is real: the
registry decides, the miner launches `chutes run` processes, Envoy routes to them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import psutil
import pytest

from chutes.registry.v1 import internal_pb2, internal_pb2_grpc, miners_pb2, miners_pb2_grpc
from tests.conftest import RunningSuite, suite_with_miner, wait_for
from tests.test_chute_run import Recorded, start_chute, start_http_server
from tests.test_identity import Hotkey, User, admin
from tests.test_registry import SDK_VERSION, deploy_body, key

ROOT = Path(__file__).resolve().parent.parent
ECHO_CODE = (ROOT / "examples" / "echo_chute.py").read_text()
ECHO_CORDS = [
    {"method": "POST", "path": f"/{name}", "public_api_path": f"/{name}", "public_api_method": "POST",
     "stream": name == "count", "function": name}
    for name in ("echo", "count")
]  # fmt: skip


@pytest.fixture(scope="module")
def runtime(database_url: str) -> Iterator[RunningSuite]:
    with suite_with_miner(database_url, "runtime") as running:
        yield running


@pytest.fixture(scope="module")
def owner(runtime: RunningSuite) -> User:
    username = "run" + uuid.uuid4().hex[:8]
    hotkey = Hotkey.new()
    made = admin(runtime, "create-user", "--username", username, "--hotkey", hotkey.ss58, "--balance", "100")
    admin(
        runtime,
        "add-image",
        "--username",
        username,
        "--name",
        "base",
        "--tag",
        "1.0",
        "--chutes-version",
        SDK_VERSION,
    )
    return User(str(made["user_id"]), username, str(made["api_key"]), hotkey)


def deploy_echo(
    runtime: RunningSuite, owner: User, name: str, code: str = ECHO_CODE, **changes: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "code": code, "filename": "echo_chute.py", "ref_str": "echo_chute:chute", "cords": ECHO_CORDS,
        "concurrency": 4,
    } | changes  # fmt: skip
    body = deploy_body(name, f"{owner.username}/base:1.0", **fields)
    response = httpx.post(
        f"{runtime.gateway}/chutes/?accept_fee=true",
        json=body,
        headers={**key(owner), "X-Chutes-Version": SDK_VERSION},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    chute: dict[str, Any] = response.json()
    return chute


def warm(runtime: RunningSuite, owner: User, chute_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The warmup stream's frames, until it ends."""
    frames = []
    with httpx.stream(
        "GET", f"{runtime.gateway}/chutes/warmup/{chute_id}", headers=key(owner), timeout=timeout
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data:"):
                frames.append(json.loads(line[5:]))
    return frames


def invoke(runtime: RunningSuite, owner: User, slug: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{runtime.gateway}{path}", json=body, headers={"Host": f"{slug}.localhost", **key(owner)}, timeout=30
    )


def instance_processes(runtime: RunningSuite) -> list[psutil.Process]:
    """The `chutes run` processes the local miner started for this suite."""
    work_dir = str(Path(runtime.env["CHUTES_DATA_DIR"]).resolve() / "miner")
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmdline = process.info["cmdline"] or []
            if "run" in cmdline and (process.info["cwd"] or "").startswith(work_dir):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_deployed_chute_warms_up_answers_rolls_and_goes(runtime: RunningSuite, owner: User) -> None:
    chute = deploy_echo(runtime, owner, "echo-" + uuid.uuid4().hex[:6])
    slug, chute_id = chute["slug"], chute["chute_id"]

    started = time.monotonic()
    frames = warm(runtime, owner, chute_id)
    warmup_seconds = time.monotonic() - started
    assert frames[0]["status"] == "cold" and frames[-1] == {
        "status": "hot",
        "log": "chute is hot, 1 instances available",
    }
    print(f"warmup to hot: {warmup_seconds:.2f} s")
    got = httpx.get(f"{runtime.gateway}/chutes/{chute_id}", headers=key(owner)).json()
    assert got["hot"] is True and len(got["instances"]) == 1

    answered = invoke(runtime, owner, slug, "/echo", {"text": "hi"})
    assert answered.status_code == 200, answered.text
    assert answered.json()["echo"] == {"text": "hi"} and answered.headers["x-chutes-invocationid"]
    with httpx.stream(
        "POST",
        f"{runtime.gateway}/count",
        json={"to": 3},
        headers={"Host": f"{slug}.localhost", **key(owner)},
    ) as stream:
        assert stream.status_code == 200
        assert [line for line in stream.iter_lines() if line.startswith("data:")] == [
            'data: {"n": 1}',
            'data: {"n": 2}',
            'data: {"n": 3}',
        ]

    # A redeploy rolls over to the new version while calls keep succeeding.
    failures: list[str] = []
    versions: set[str] = set()
    calling = True

    def keep_calling() -> None:
        while calling:
            response = invoke(runtime, owner, slug, "/echo", {"text": "roll"})
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text}")
            else:
                versions.add(str(response.json().get("version", "v1")))
            time.sleep(0.02)

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        v2 = ECHO_CODE.replace('"uptime_seconds":', '"version": "v2", "uptime_seconds":')
        assert v2 != ECHO_CODE
        deploy_echo(runtime, owner, chute["name"], code=v2)
        wait_for("the new version answers", lambda: "v2" in versions, timeout=60)
        wait_for(
            "the old instance is gone",
            lambda: (
                len(httpx.get(f"{runtime.gateway}/chutes/{chute_id}", headers=key(owner)).json()["instances"])
                == 1
            ),
        )
    finally:
        calling = False
        caller.join()
    assert failures == []
    assert wait_for("one instance process", lambda: len(instance_processes(runtime)) == 1)

    # An instance that dies leaves routing and, the chute still wanted, is replaced.
    [process] = instance_processes(runtime)
    process.send_signal(signal.SIGKILL)
    wait_for(
        "a replacement instance", lambda: [p for p in instance_processes(runtime) if p.pid != process.pid]
    )
    wait_for(
        "calls succeed again",
        lambda: invoke(runtime, owner, slug, "/echo", {"text": "again"}).status_code == 200,
    )

    # Deleting the chute stops its instances: no process is left and the host is unknown.
    assert httpx.delete(f"{runtime.gateway}/chutes/{chute_id}", headers=key(owner)).status_code == 200
    wait_for("no instance process", lambda: not instance_processes(runtime))
    gone = wait_for(
        "the host is unknown",
        lambda: (r := invoke(runtime, owner, slug, "/echo", {"text": "gone"})).status_code == 404 and r,
    )
    assert gone.json() == {"detail": "No matching chute found!"}


def test_chutes_warmup_shows_the_chute_going_hot(runtime: RunningSuite, owner: User, tmp_path: Path) -> None:
    chute = deploy_echo(runtime, owner, "cli-" + uuid.uuid4().hex[:6])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env.update(
        HOME=str(tmp_path),
        CHUTES_CONFIG_PATH=str(tmp_path / "config.ini"),
        CHUTES_API_URL=runtime.gateway,
        CHUTES_API_KEY=owner.api_key,
    )
    (tmp_path / "config.ini").write_text(
        "[api]\n[auth]\nuser_id =\nusername =\nhotkey_seed =\nhotkey_name =\nhotkey_ss58address =\n"
    )
    result = subprocess.run(
        [str(Path(sys.executable).parent / "chutes"), "warmup", chute["name"]],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0].startswith("cold: waiting for instances")
        and lines[-1] == "hot: chute is hot, 1 instances available"
    )
    assert (
        httpx.delete(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).status_code == 200
    )


def test_a_cold_call_answers_503_and_starts_an_instance(runtime: RunningSuite, owner: User) -> None:
    chute = deploy_echo(runtime, owner, "cold-" + uuid.uuid4().hex[:6])
    cold = invoke(runtime, owner, chute["slug"], "/echo", {"text": "hi"})
    assert cold.status_code == 503
    assert cold.json() == {"detail": f"No instances available (yet) for chute_id={chute['chute_id']}"}
    wait_for(
        "the chute becomes hot",
        lambda: invoke(runtime, owner, chute["slug"], "/echo", {"text": "warm"}).status_code == 200,
        60,
    )
    assert (
        httpx.delete(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).status_code == 200
    )


def test_quick_warmup_is_one_json_snapshot(runtime: RunningSuite, owner: User) -> None:
    chute = deploy_echo(runtime, owner, "quick-" + uuid.uuid4().hex[:6])
    url = f"{runtime.gateway}/chutes/warmup/{chute['chute_id']}?quick=true"
    quick = httpx.get(url, headers=key(owner))
    assert quick.status_code == 200 and quick.headers["content-type"].startswith("application/json")
    # A cold chute's warmup creates its bounty (tests/test_bounties.py), shown in the snapshot.
    assert quick.json()["status"] == "cold" and quick.json()["bounty"]["amount"] > 0
    # Each quick warmup wants the chute too: polled, it turns hot, with what the dashboard shows.
    hot = wait_for("hot", lambda: (q := httpx.get(url, headers=key(owner)).json())["status"] == "hot" and q)
    assert hot["instance_count"] == 1 and hot["bounty"] is None  # claimed by the routable instance
    [instance] = hot["instances"]
    assert (instance["active"], instance["gpu_count"], instance["gpu_model_name"]) == (True, 1, "pro_6000")
    assert (
        httpx.delete(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).status_code == 200
    )


def test_an_instance_log_streams_to_its_owner_only(runtime: RunningSuite, owner: User) -> None:
    chute = deploy_echo(runtime, owner, "logs-" + uuid.uuid4().hex[:6])
    assert warm(runtime, owner, chute["chute_id"])[-1]["status"] == "hot"
    url = f"{runtime.gateway}/chutes/warmup/{chute['chute_id']}?quick=true"
    [instance] = httpx.get(url, headers=key(owner)).json()["instances"]
    logs_url = f"{runtime.gateway}/instances/{instance['instance_id']}/logs"
    seen: list[str] = []
    with httpx.stream("GET", logs_url, params={"backfill": 100}, headers=key(owner), timeout=30) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        # The backfill: the instance's start-up, as it wrote it.
        while not any("Application startup complete" in line for line in seen):
            line = next(lines)
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["log"])
        # Then it follows: a call's access-log line arrives as the instance writes it.
        assert invoke(runtime, owner, chute["slug"], "/echo", {"text": "logged"}).status_code == 200
        while not any('"POST /echo HTTP/1.1" 200' in line for line in seen):
            line = next(lines)
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["log"])

    stranger = admin(runtime, "create-user", "--username", "nolog" + uuid.uuid4().hex[:6], "--balance", "1")
    hidden = httpx.get(logs_url, headers={"Authorization": str(stranger["api_key"])}, timeout=10)
    assert (hidden.status_code, hidden.json()) == (404, {"detail": "Instance not found"})
    assert httpx.get(logs_url, timeout=10).status_code == 401
    too_much = httpx.get(logs_url, params={"backfill": 10_001}, headers=key(owner), timeout=10)
    assert too_much.status_code == 422 and too_much.json()["detail"][0]["loc"] == ["query", "backfill"]
    # The instance's own endpoints are not reachable through the chute's host, by anyone.
    direct = httpx.get(
        f"{runtime.gateway}/_chutes/logs", headers={"Host": f"{chute['slug']}.localhost", **key(owner)}
    )
    assert (direct.status_code, direct.json()) == (404, {"detail": "Not Found"})
    assert (
        httpx.delete(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).status_code == 200
    )


def test_only_miners_may_register_nodes(runtime: RunningSuite, owner: User) -> None:
    target = runtime.gateway.removeprefix("http://")
    with grpc.insecure_channel(target) as channel:
        stub = miners_pb2_grpc.MinerServiceStub(channel)
        request = miners_pb2.RegisterNodeRequest(name="sneaky", host="127.0.0.1")
        with pytest.raises(grpc.RpcError) as user_key:
            stub.RegisterNode(request, metadata=(("authorization", owner.api_key),), timeout=10)
        assert user_key.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.RegisterNode(request, timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_local_miner_says_its_gpus_are_simulated(runtime: RunningSuite) -> None:
    async def nodes() -> list[Any]:
        url = runtime.env["CHUTES_DATABASE_URL"]
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetch("SELECT simulated, gpus::text AS gpus FROM registry.nodes")
        finally:
            await connection.close()

    [node] = wait_for("the local node", lambda: asyncio.run(nodes()))
    assert node["simulated"] is True
    assert [g["gpu_identifier"] for g in json.loads(node["gpus"])] == ["pro_6000", "pro_6000"]


def test_a_lost_miner_loses_its_instances_within_10_seconds(
    runtime: RunningSuite, owner: User, tmp_path: Path
) -> None:
    """A second node, played by this test over the real MinerService (a test double of a miner:
    it runs the instance itself), is the only one with h100s; when its work stream ends (the
    miner died), its instance is out of routing within 10 s."""
    made = admin(runtime, "create-user", "--username", "m" + uuid.uuid4().hex[:8], "--role", "miner")
    metadata = (("authorization", str(made["api_key"])),)
    chute = deploy_echo(
        runtime, owner, "h100-" + uuid.uuid4().hex[:6],
        node_selector={"gpu_count": 1, "include": ["h100"], "exclude": None, "min_vram_gb_per_gpu": 16,
                       "max_hourly_price_per_gpu": None},
    )  # fmt: skip
    instance_env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    process = start_chute("examples/echo_chute:chute", instance_env, tmp_path)
    port = int(process.url.rsplit(":", 1)[1])
    channel = grpc.insecure_channel(runtime.gateway.removeprefix("http://"))
    try:
        stub = miners_pb2_grpc.MinerServiceStub(channel)
        node = stub.RegisterNode(
            miners_pb2.RegisterNodeRequest(
                name="h100-box",
                host="127.0.0.1",
                gpus=[miners_pb2.Gpu(gpu_identifier="h100", device_index=0)],
            ),
            metadata=metadata,
            timeout=10,
        )
        work = stub.WatchWork(miners_pb2.WatchWorkRequest(node_id=node.node_id), metadata=metadata)
        assert (
            httpx.get(
                f"{runtime.gateway}/chutes/warmup/{chute['chute_id']}?quick=true", headers=key(owner)
            ).json()["status"]
            == "cold"
        )
        launch = next(w for w in work if w.HasField("launch")).launch
        assert (launch.chute_id, launch.filename, launch.ref_str) == (
            chute["chute_id"],
            "echo_chute.py",
            "echo_chute:chute",
        )
        for state in (miners_pb2.INSTANCE_STATE_STARTED, miners_pb2.INSTANCE_STATE_READY):
            reported = stub.ReportInstance(
                miners_pb2.ReportInstanceRequest(instance_id=launch.instance_id, state=state, port=port),
                metadata=metadata,
                timeout=10,
            )
            assert reported.wanted
        wait_for(
            "the h100 node's instance answers",
            lambda: invoke(runtime, owner, chute["slug"], "/echo", {"text": "h100"}).status_code == 200,
        )
        work.cancel()  # the miner is gone
        lost = time.monotonic()
        wait_for(
            "the instance leaves routing",
            lambda: invoke(runtime, owner, chute["slug"], "/echo", {"text": "h100"}).status_code == 503,
            timeout=15,
        )
        assert time.monotonic() - lost <= 10
    finally:
        channel.close()
        process.stop()
    assert (
        httpx.delete(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).status_code == 200
    )


JOB_CODE = """
import asyncio
from pathlib import Path
from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="runner", name="job-chute", image="runner/base:1.0", node_selector=NodeSelector(gpu_count=1)
)


@chute.job(timeout=120)
async def train(self, output_dir: str, epochs: int = 1, sleep: float = 0) -> dict:
    await asyncio.sleep(sleep)
    (Path(output_dir) / "weights.bin").write_bytes(bytes(range(256)) * epochs)
    return {"epochs": epochs}
"""


def job_api(request: Recorded, base: str) -> tuple[int, str, bytes]:
    """The job API as an instance sees it, recorded (the jobs service's side: tests/test_jobs.py)."""
    job_path = request.path.split("?", 1)[0]
    if request.method == "POST":
        names = json.loads(request.body)["output_filenames"]
        urls = {name: f"{base}{job_path}/upload?token=file-{i}" for i, name in enumerate(names)}
        return 200, "application/json", json.dumps({"output_storage_urls": urls}).encode()
    return 200, "application/json", b"{}"


def test_jobs_run_once_on_a_node_and_can_be_cancelled(runtime: RunningSuite, owner: User) -> None:
    chute = deploy_echo(
        runtime, owner, "jobs-" + uuid.uuid4().hex[:6], code=JOB_CODE, filename="job_chute.py",
        ref_str="job_chute:chute", cords=[],
        jobs=[{"name": "train", "upload": True, "timeout": 120, "ports": [], "disk_gb": 10}],
    )  # fmt: skip
    recorder, server = start_http_server(job_api)
    channel = grpc.insecure_channel(runtime.address_of("registry"))
    try:
        stub = internal_pb2_grpc.RegistryInternalServiceStub(channel)

        def placement(job_id: str) -> Any:
            [found] = stub.GetJobPlacements(
                internal_pb2.GetJobPlacementsRequest(job_ids=[job_id]), timeout=10
            ).placements
            return found

        def schedule(data: dict[str, Any]) -> str:
            job_id = str(uuid.uuid4())
            placed = stub.ScheduleJob(
                internal_pb2.ScheduleJobRequest(
                    job_id=job_id, chute_id=chute["chute_id"], method="train", data_json=json.dumps(data),
                    status_url=f"{recorder.url}/jobs/{job_id}?token=t",
                ),
                timeout=10,
            )  # fmt: skip
            assert placed.state in (
                internal_pb2.JOB_PLACEMENT_STATE_PENDING,
                internal_pb2.JOB_PLACEMENT_STATE_PLACED,
            )
            return job_id

        done = schedule({"epochs": 2})
        ended = wait_for(
            "the job ends",
            lambda: (p := placement(done)).state == internal_pb2.JOB_PLACEMENT_STATE_ENDED and p,
            timeout=60,
        )
        assert ended.succeeded and ended.reason == ""
        paths = [(r.method, r.path.split("?")[0]) for r in recorder.requests if done in r.path]
        assert paths == [("POST", f"/jobs/{done}"), ("PUT", f"/jobs/{done}/upload"), ("PUT", f"/jobs/{done}")]
        assert json.loads(recorder.requests[0].body)["result"] == {"epochs": 2}

        long = schedule({"sleep": 60})
        wait_for(
            "the long job runs", lambda: placement(long).state == internal_pb2.JOB_PLACEMENT_STATE_RUNNING
        )
        cancelled_at = time.monotonic()
        stub.CancelJob(internal_pb2.CancelJobRequest(job_id=long, reason="user initiated"), timeout=10)
        ended = wait_for(
            "the cancelled job ends",
            lambda: (p := placement(long)).state == internal_pb2.JOB_PLACEMENT_STATE_ENDED and p,
        )
        assert time.monotonic() - cancelled_at < 5
        assert not ended.succeeded and ended.reason == "user initiated"
        assert wait_for("no job process", lambda: not instance_processes(runtime))

        with pytest.raises(grpc.RpcError) as unknown:
            stub.ScheduleJob(
                internal_pb2.ScheduleJobRequest(
                    job_id=str(uuid.uuid4()), chute_id=chute["chute_id"], method="nope"
                ),
                timeout=10,
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()
        server.shutdown()
        server.server_close()
    assert (
        httpx.delete(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).status_code == 200
    )


def test_a_job_whose_miner_is_lost_ends_in_error(runtime: RunningSuite, owner: User) -> None:
    """The job's node, played by this test over the real MinerService, is the only one with h100s;
    its work stream ends mid-job (the miner died): the job ends in error with the reason."""
    made = admin(runtime, "create-user", "--username", "j" + uuid.uuid4().hex[:8], "--role", "miner")
    metadata = (("authorization", str(made["api_key"])),)
    chute = deploy_echo(
        runtime, owner, "h100-jobs-" + uuid.uuid4().hex[:6], code=JOB_CODE, filename="job_chute.py",
        ref_str="job_chute:chute", cords=[],
        jobs=[{"name": "train", "upload": True, "timeout": 120, "ports": [], "disk_gb": 10}],
        node_selector={"gpu_count": 1, "include": ["h100"], "exclude": None, "min_vram_gb_per_gpu": 16,
                       "max_hourly_price_per_gpu": None},
    )  # fmt: skip
    channel = grpc.insecure_channel(runtime.gateway.removeprefix("http://"))
    try:
        stub = miners_pb2_grpc.MinerServiceStub(channel)
        node = stub.RegisterNode(
            miners_pb2.RegisterNodeRequest(
                name="h100-jobs",
                host="127.0.0.1",
                gpus=[miners_pb2.Gpu(gpu_identifier="h100", device_index=0)],
            ),
            metadata=metadata,
            timeout=10,
        )
        work = stub.WatchWork(miners_pb2.WatchWorkRequest(node_id=node.node_id), metadata=metadata)
        created = httpx.post(
            f"{runtime.gateway}/jobs/{chute['chute_id']}/train",
            json={"sleep": 300},
            headers=key(owner),
            timeout=30,
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        launch = next(w for w in work if w.HasField("launch")).launch
        assert (launch.job.job_id, launch.job.method, json.loads(launch.job.data_json)) == (
            job_id, "train", {"sleep": 300},
        )  # fmt: skip
        assert f"/jobs/{job_id}?token=" in launch.job.status_url
        stub.ReportInstance(
            miners_pb2.ReportInstanceRequest(
                instance_id=launch.instance_id, state=miners_pb2.INSTANCE_STATE_STARTED
            ),
            metadata=metadata,
            timeout=10,
        )
        work.cancel()  # the miner is gone, mid-job
        ended = wait_for(
            "the job ends",
            lambda: (
                (j := httpx.get(f"{runtime.gateway}/jobs/{job_id}", headers=key(owner)).json()).get(
                    "finished_at"
                )
                and j
            ),
            timeout=30,
        )
        assert ended["status"] == "error"
        assert "its node was lost" in ended["error_detail"]
    finally:
        channel.close()
    assert (
        httpx.delete(f"{runtime.gateway}/chutes/{chute['chute_id']}", headers=key(owner)).status_code == 200
    )
