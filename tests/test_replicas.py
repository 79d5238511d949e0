"""Every service as several replicas behind the gateway (issue 17, item 1).

One suite runs with `--replicas 2` (CHUTES_REPLICAS=2): two processes of each service, each on
its own ports, Envoy's clusters with one endpoint per replica. The replicas share what must be
shared: an exact hotkey replay is refused whichever identity replica sees it (the replay store is
in PostgreSQL), a chute changed through one registry replica is read fresh from the other (its
read cache hears the change's NOTIFY), and a replica killed under load fails only the requests
that were in flight on it while the supervisor restarts it on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chutes.registry.v1 import registry_pb2, registry_pb2_grpc
from gateway.render import AUTHZ_CLUSTER, INVOCATION_AUTHZ_CLUSTER
from services.kit.settings import SERVICE_NAMES
from tests.conftest import RunningSuite, start_suite, suite_env, wait_for
from tests.test_identity import User, new_user
from tests.test_registry import deploy_body, deployed, http, image, key, owner  # noqa: F401

REPLICAS = 2


@pytest.fixture(scope="module")
def suite(database_url: str) -> Iterator[RunningSuite]:
    """A suite of two replicas per service on a database of its own."""
    name = f"replicas_{uuid.uuid4().hex[:10]}"

    async def create_database() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create_database())
    with tempfile.TemporaryDirectory(prefix="chutes-test-replicas-") as tmp:
        env = suite_env(Path(tmp), database_url.rsplit("/", 1)[0] + "/" + name)
        env["CHUTES_REPLICAS"] = str(REPLICAS)
        running = start_suite(env)
        try:
            yield running
        finally:
            running.stop()


def endpoints(suite: RunningSuite, cluster: str) -> list[str]:
    """The `host:port` of each endpoint of a cluster of the gateway `up` rendered."""
    config = json.loads((Path(suite.env["CHUTES_DATA_DIR"]) / "envoy.json").read_text())
    (found,) = (c for c in config["static_resources"]["clusters"] if c["name"] == cluster)
    addresses = [
        e["endpoint"]["address"]["socket_address"]
        for e in found["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    return [f"{a['address']}:{a['port_value']}" for a in addresses]


def test_each_service_has_its_replicas_behind_the_gateway(suite: RunningSuite) -> None:
    for cluster in (*SERVICE_NAMES, AUTHZ_CLUSTER, INVOCATION_AUTHZ_CLUSTER):
        found = endpoints(suite, cluster)
        assert len(set(found)) == REPLICAS, (cluster, found)
    for name in SERVICE_NAMES:
        for address in endpoints(suite, name):
            assert serving(address), address


def test_an_exact_replay_is_refused_by_the_other_identity_replica(suite: RunningSuite) -> None:
    alice = new_user(suite)
    first, second = endpoints(suite, AUTHZ_CLUSTER)
    for a, b in ((first, second), (second, first)):
        headers = alice.hotkey.headers("me")
        assert httpx.get(f"http://{a}/users/me", headers=headers).status_code == 200
        replayed = httpx.get(f"http://{b}/users/me", headers=headers)
        assert replayed.status_code == 401 and "Replayed" in replayed.json()["detail"], replayed.text
        assert httpx.get(f"http://{a}/users/me", headers=headers).status_code == 401
    # Through the gateway, whichever replica each attempt reaches: one passes, every replay fails.
    headers = alice.hotkey.headers("me")
    statuses = [httpx.get(f"{suite.gateway}/users/me", headers=headers).status_code for _ in range(6)]
    assert statuses == [200] + [401] * 5


def test_a_chute_updated_through_one_registry_replica_is_fresh_on_the_other(
    suite: RunningSuite,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    image: str,  # noqa: F811
) -> None:
    chute_id = deployed(http, owner, deploy_body("replicated-" + uuid.uuid4().hex[:6], image))["chute_id"]
    metadata = (("authorization", key(owner)["Authorization"]),)
    one, other = (
        registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(address))
        for address in endpoints(suite, "registry")
    )
    read = registry_pb2.GetChuteRequest(chute_id_or_name=chute_id)
    for number in range(3):
        for stub in (one, other):  # both answers cached before the change
            assert stub.GetChute(read, metadata=metadata, timeout=10).tagline != f"t{number}"
        writer, reader = (one, other) if number % 2 == 0 else (other, one)
        writer.UpdateChute(
            registry_pb2.UpdateChuteRequest(chute_id_or_name=chute_id, tagline=f"t{number}"),
            metadata=metadata,
            timeout=10,
        )
        changed_at = time.monotonic()
        wait_for(
            "the other replica's answer",
            lambda reader=reader, wanted=f"t{number}": (  # type: ignore[misc]
                reader.GetChute(read, metadata=metadata, timeout=10).tagline == wanted
            ),
            timeout=1,
            interval=0.02,
        )
        assert time.monotonic() - changed_at < 1


@dataclass
class Load:
    """Requests through the gateway to every service, one after another on a few threads; each
    request's start, end and outcome."""

    gateway: str
    user: User
    chute_id: str
    results: list[tuple[float, float, str | None]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def requests(self) -> list[tuple[str, dict[str, str]]]:
        auth = key(self.user)
        return [
            ("/users/me", auth),  # identity
            ("/users/me", self.user.hotkey.headers("me")),  # identity's signature check, then identity
            (f"/chutes/{self.chute_id}", auth),  # registry (the caller from identity)
            (f"/jobs/{uuid.uuid4()}", auth),  # jobs: a 404 of its own
            (f"/chutes/{self.chute_id}/evidence", auth),  # attestation
            ("/chutes/utilization", auth),  # metrics
        ]

    def run(self) -> None:
        with httpx.Client(base_url=self.gateway, timeout=10) as client:
            while not self.stopping.is_set():
                for path, headers in self.requests():
                    started = time.monotonic()
                    try:
                        reply = client.get(path, headers=headers)
                        failure = (
                            None if reply.status_code < 500 else f"{path}: {reply.status_code} {reply.text}"
                        )
                        if failure and "x-chutes-signature" in {h.lower() for h in headers}:
                            failure += " (signed)"
                    except httpx.HTTPError as error:
                        failure = f"{path}: {error!r}"
                    self.results.append((started, time.monotonic(), failure))
                time.sleep(0.01)


def serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def listener(address: str) -> int | None:
    """The pid of the process listening on `address`'s port."""
    port = int(address.rpartition(":")[2])
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return int(connection.pid)
    return None


def test_killing_one_replica_of_each_service_fails_only_what_was_in_flight_on_it(
    suite: RunningSuite,
    http: httpx.Client,  # noqa: F811
    owner: User,  # noqa: F811
    image: str,  # noqa: F811
) -> None:
    chute_id = deployed(http, owner, deploy_body("killed-" + uuid.uuid4().hex[:6], image))["chute_id"]
    load = Load(suite.gateway, owner, chute_id)
    threads = [threading.Thread(target=load.run) for _ in range(3)]
    for thread in threads:
        thread.start()
    kills: list[tuple[float, float]] = []  # when each SIGKILL was sent, when the replica was dead
    try:
        time.sleep(0.5)
        for index, name in enumerate(SERVICE_NAMES):
            address = endpoints(suite, name)[index % REPLICAS]
            pid = listener(address)
            assert pid is not None, address
            process = psutil.Process(pid)
            sent = time.monotonic()
            process.send_signal(signal.SIGKILL)
            process.wait(5)  # dead only once the kernel has reaped it: requests until then reach it
            kills.append((sent, time.monotonic()))
            time.sleep(1.0)  # requests meanwhile go to the other replica
            # The supervisor restarts that replica alone, on its own ports.
            wait_for(
                f"{name} restarted",
                lambda address=address, pid=pid: (  # type: ignore[misc]
                    listener(address) not in (None, pid) and serving(address)
                ),
            )
            time.sleep(0.3)
    finally:
        load.stopping.set()
        for thread in threads:
            thread.join(30)
    assert len(load.results) > 100
    # A request may fail only if it was in flight while a replica died (sent before it was dead,
    # answered after the kill was sent), on that replica or on a call that replica was making:
    # never one sent once it was gone.
    unexplained = [
        (failure, [round(started - sent, 3) for sent, _ in kills])
        for started, ended, failure in load.results
        if failure is not None and not any(started <= dead and ended >= sent for sent, dead in kills)
    ]
    assert unexplained == [], unexplained
    restarted = "".join(suite.stderr_lines)
    for name in SERVICE_NAMES:
        assert f"{name}-{SERVICE_NAMES.index(name) % REPLICAS + 1} restarted" in restarted


def test_each_job_runs_exactly_once_with_two_miners_and_two_registries(suite: RunningSuite) -> None:
    from chutes.registry.v1 import internal_pb2, internal_pb2_grpc
    from tests.test_chute_run import start_http_server
    from tests.test_identity import admin
    from tests.test_runtime import JOB_CODE, deploy_echo, job_api

    runner = "jobs" + uuid.uuid4().hex[:6]
    made = admin(suite, "create-user", "--username", runner, "--balance", "100")
    admin(suite, "add-image", "--username", runner, "--name", "base", "--tag", "1.0")
    job_owner = User(str(made["user_id"]), runner, str(made["api_key"]), None)  # type: ignore[arg-type]
    job = {"name": "train", "upload": True, "timeout": 120, "ports": [], "disk_gb": 10}
    chute = deploy_echo(
        suite, job_owner, "jobs-" + uuid.uuid4().hex[:6], code=JOB_CODE, filename="job_chute.py",
        ref_str="job_chute:chute", cords=[], jobs=[job],
    )  # fmt: skip
    miner_key = admin(suite, "create-user", "--username", "m" + uuid.uuid4().hex[:8], "--role", "miner")[
        "api_key"
    ]
    recorder, server = start_http_server(job_api)
    miners = []
    with tempfile.TemporaryDirectory(prefix="chutes-test-two-miners-") as tmp:
        try:
            for name in ("node-a", "node-b"):
                argv = [sys.executable, "-m", "suite.miner", "--gateway", suite.gateway, "--name", name]
                argv += ["--gpus", "pro_6000:1", "--work-dir", str(Path(tmp) / name)]
                env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
                env["CHUTES_MINER_API_KEY"] = str(miner_key)
                miners.append(subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL))
            # Jobs asked of both registry replicas in turn, more than the two nodes hold at once.
            stubs = [
                internal_pb2_grpc.RegistryInternalServiceStub(grpc.insecure_channel(address))
                for address in endpoints(suite, "registry")
            ]
            job_ids = [str(uuid.uuid4()) for _ in range(6)]
            for i, job_id in enumerate(job_ids):
                stubs[i % len(stubs)].ScheduleJob(
                    internal_pb2.ScheduleJobRequest(
                        job_id=job_id, chute_id=chute["chute_id"], method="train", data_json='{"epochs": 1}',
                        status_url=f"{recorder.url}/jobs/{job_id}?token=t",
                    ),
                    timeout=10,
                )  # fmt: skip

            def ended() -> bool:
                found = stubs[0].GetJobPlacements(
                    internal_pb2.GetJobPlacementsRequest(job_ids=job_ids), timeout=10
                )
                return len(found.placements) == 6 and all(
                    p.state == internal_pb2.JOB_PLACEMENT_STATE_ENDED and p.succeeded
                    for p in found.placements
                )

            wait_for("every job done", ended, timeout=90, interval=0.25)
        finally:
            for miner in miners:
                miner.terminate()
            for miner in miners:
                miner.wait(30)
            server.shutdown()
    # Each job's instance ran it once: one result POST per job, none twice.
    posts = [r.path.split("?")[0] for r in recorder.requests if r.method == "POST"]
    assert sorted(posts) == sorted(f"/jobs/{job_id}" for job_id in job_ids)
