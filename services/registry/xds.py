"""The gateway's control plane: delta ADS serving one Envoy cluster per chute (CDS) and its
instances (EDS). See notes/runtime-facts.md for the lab behind every rule here.

- `RoutingTable` is the state: `set_chute`, `remove_chute`, `add_instance`, `remove_instance`,
  `load`. Each change that alters what Envoy should have bumps `generation`; `wait_acked(g)` waits
  until every connected Envoy has applied and ACKed generation `g` (or later).
- `AdsServicer` (ads.py) serves `DeltaAggregatedResources` (CDS + EDS only). State-of-the-world streams are
  refused with UNIMPLEMENTED. Streams get no answer before `RoutingTable.mark_ready()`: an answer
  from an empty table would make Envoy delete every chute cluster, so the caller loads the table
  from the database first.

Rules the resources follow:
- cluster `{slug}.{domain}` (what the gateway's single route finds by `:authority`), EDS over ADS,
  metadata `chutes: {chute_id}`, stats under `cluster.chute-{slug}.` (the gateway rejects them);
- per-host `max_connections = concurrency` (HTTP/1.1 upstream: one connection, one request), a
  1024-deep pending queue per cluster, FULL_SCAN least request, `idle_timeout` 4 s (below
  uvicorn's 5 s keep-alive), outlier detection on local-origin (connect) failures only, and only
  while the chute has instances. Each detector works on Envoy's main thread (a 1 s timer; at 10 s
  they still cost half): 30,000 clusters, 2,422 with an instance, idle, standalone, cost 5.5-5.8%
  of a core with detection on all of them and 1.4-1.7% with it on the 2,422 (0.95% with none),
  and 135 MB more memory (1,120 MB RSS). A cluster without hosts has nothing to eject;
- instances live only in the ClusterLoadAssignment (host metadata `chutes: {instance_id}`): a
  Cluster update rebuilds the cluster and resets its circuit breakers, so instance changes never
  touch it, except the 0 <-> 1+ transitions, which add or drop the outlier detection (the cluster
  has no host on one side of them, so nothing to reset worth keeping);
- versions are content hashes, so a reconnecting Envoy that reports `initial_resource_versions`
  is sent nothing it already has;
- whenever a Cluster is (re)sent its ClusterLoadAssignment is sent again, or the updated cluster
  would stay warming.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from gateway.render import CHUTE_STAT_PREFIX, METADATA_NAMESPACE

if TYPE_CHECKING:
    from services.registry.ads import Stream

log = logging.getLogger(__name__)

#: The full name of Envoy's aggregated discovery service.
ADS_SERVICE: Final = "envoy.service.discovery.v3.AggregatedDiscoveryService"
CLUSTER_TYPE: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#: Requests that may wait for a free connection, per chute (Envoy's queue is per host).
MAX_PENDING_REQUESTS = 1024
#: Below uvicorn's 5 s keep-alive, so Envoy never reuses a connection the instance is closing.
UPSTREAM_IDLE_TIMEOUT_SECONDS = 4
DEFAULT_CONNECT_TIMEOUT_SECONDS = 2.0

_LEAST_REQUEST = "envoy.load_balancing_policies.least_request"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


# ---- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One routable instance. `host` must be an IP address (EDS does not resolve names);
    `localhost` is taken as 127.0.0.1."""

    instance_id: str
    host: str
    port: int

    def __post_init__(self) -> None:
        host = self.host.strip("[]")
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"instance {self.instance_id}: host must be an IP address, not {self.host!r}"
            ) from None
        if not 0 < self.port < 65536:
            raise ValueError(f"instance {self.instance_id}: bad port {self.port}")
        object.__setattr__(self, "host", host)


@dataclass(frozen=True)
class ChuteRoute:
    """What the gateway needs to route a chute: its public host is `{slug}.{domain}`."""

    chute_id: str
    slug: str
    concurrency: int
    instances: tuple[Endpoint, ...] = ()

    def __post_init__(self) -> None:
        if not self.slug or not all(c.isascii() and (c.isalnum() or c == "-") for c in self.slug):
            raise ValueError(f"chute {self.chute_id}: slug {self.slug!r} is not a DNS label")
        if self.slug != self.slug.lower():
            raise ValueError(f"chute {self.chute_id}: slug {self.slug!r} is not lowercase")
        if self.concurrency < 1:
            raise ValueError(f"chute {self.chute_id}: concurrency must be at least 1")
        instances = tuple(self.instances)
        if len({i.instance_id for i in instances}) != len(instances):
            raise ValueError(f"chute {self.chute_id}: duplicate instance ids")
        object.__setattr__(self, "instances", instances)


@dataclass(frozen=True)
class Snapshot:
    generation: int
    ready: bool
    clusters: Mapping[str, discovery_pb2.Resource]  # by cluster name
    assignments: Mapping[str, discovery_pb2.Resource]  # by cluster name
    #: name -> version, the same as the resources' own (plain dicts: diffs at 10k chutes take
    #: about 1 ms instead of 12 ms reading protobuf fields)
    cluster_versions: Mapping[str, str]
    assignment_versions: Mapping[str, str]

    def of(self, type_url: str) -> Mapping[str, discovery_pb2.Resource]:
        return self.clusters if type_url == CLUSTER_TYPE else self.assignments

    def versions_of(self, type_url: str) -> Mapping[str, str]:
        return self.cluster_versions if type_url == CLUSTER_TYPE else self.assignment_versions


class _Resources:
    """A copy of one type's resources and versions, being changed."""

    def __init__(self, resources: Mapping[str, discovery_pb2.Resource], versions: Mapping[str, str]) -> None:
        self.resources = dict(resources)
        self.versions = dict(versions)

    def set(self, resource: discovery_pb2.Resource) -> None:
        self.resources[resource.name] = resource
        self.versions[resource.name] = resource.version

    def pop(self, name: str) -> None:
        self.resources.pop(name, None)
        self.versions.pop(name, None)


class Waker:
    """Runs `callback` on the loop it was created on, from any thread."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.callback = callback

    def __call__(self) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.callback()
            return
        try:
            self.loop.call_soon_threadsafe(self.callback)
        except RuntimeError:  # that loop is closed
            pass


class RoutingTable:
    """The chutes the gateway routes, as Envoy resources. Thread-safe; the streams that serve it
    run on the asyncio loop of the gRPC server."""

    def __init__(
        self, domain: str = "localhost", *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    ) -> None:
        self.domain = domain.strip(".").lower()
        self.connect_timeout = connect_timeout
        # Reentrant: the read-modify-write helpers (add_instance...) hold it around _apply.
        self._lock = threading.RLock()
        self._routes: dict[str, ChuteRoute] = {}
        self._owners: dict[str, str] = {}  # cluster name -> chute id
        self._snapshot = Snapshot(0, False, {}, {}, {}, {})
        self._streams: set[Stream] = set()
        self._stream_wakers: set[Waker] = set()
        self._ack_wakers: set[Waker] = set()
        self._template = _cluster_template(connect_timeout)

    # -- reading

    @property
    def generation(self) -> int:
        return self._snapshot.generation

    @property
    def ready(self) -> bool:
        return self._snapshot.ready

    def cluster_name(self, slug: str) -> str:
        return f"{slug}.{self.domain}"

    def get(self, chute_id: str) -> ChuteRoute | None:
        return self._routes.get(chute_id)

    def routes(self) -> list[ChuteRoute]:
        with self._lock:
            return list(self._routes.values())

    @property
    def streams(self) -> int:
        """How many Envoys are connected."""
        return len(self._streams)

    def versions(self, type_url: str) -> dict[str, str]:
        """Name -> version of the resources of one type (tests, debugging)."""
        return dict(self._snapshot.versions_of(type_url))

    # -- changing

    def mark_ready(self) -> None:
        """The table holds the real state (loaded from the database): streams may be answered."""
        with self._lock:
            if self._snapshot.ready:
                return
            s = self._snapshot
            self._snapshot = Snapshot(
                s.generation, True, s.clusters, s.assignments, s.cluster_versions, s.assignment_versions
            )
        self._wake_streams()

    def set_chute(self, route: ChuteRoute) -> int:
        """Add or replace a chute (its instances included). Returns the generation that carries
        it; a change of instances only is sent over EDS, leaving the cluster untouched (except
        from none to some or back: that adds or drops the cluster's outlier detection)."""
        return self._apply([route], [])

    def remove_chute(self, chute_id: str) -> int:
        return self._apply([], [chute_id])

    def update(self, routes: Iterable[ChuteRoute], removals: Iterable[str]) -> int:
        """Add or replace some chutes and remove others, in one generation: one copy of the
        table for the batch (a copy per chute made a bulk insert of 20,000 chutes cost the
        registry minutes of CPU)."""
        return self._apply(list(routes), list(removals))

    def load(self, routes: Iterable[ChuteRoute]) -> int:
        """Replace the whole table (the chutes not in `routes` are removed)."""
        routes = list(routes)
        keep = {r.chute_id for r in routes}
        with self._lock:
            gone = [chute_id for chute_id in self._routes if chute_id not in keep]
            return self._apply(routes, gone)

    def set_instances(self, chute_id: str, instances: Iterable[Endpoint]) -> int:
        """Replace a chute's instances (KeyError if the chute is not in the table)."""
        with self._lock:
            route = self._require(chute_id)
            changed = ChuteRoute(route.chute_id, route.slug, route.concurrency, tuple(instances))
            return self._apply([changed], [])

    def add_instance(self, chute_id: str, endpoint: Endpoint) -> int:
        """Make an instance routable (or move it: same instance_id, new address)."""
        with self._lock:
            route = self._require(chute_id)
            others = tuple(i for i in route.instances if i.instance_id != endpoint.instance_id)
            return self.set_instances(chute_id, (*others, endpoint))

    def remove_instance(self, chute_id: str, instance_id: str) -> int:
        """Stop routing to an instance (no-op for an unknown chute or instance)."""
        with self._lock:
            route = self._routes.get(chute_id)
            if route is None:
                return self.generation
            return self.set_instances(chute_id, (i for i in route.instances if i.instance_id != instance_id))

    async def wait_acked(self, generation: int | None = None) -> None:
        """Wait until at least one Envoy is connected and every connected one has applied and
        ACKed `generation` (default: the current one). Bound it with `asyncio.timeout`."""
        target = self.generation if generation is None else generation
        event = asyncio.Event()
        waker = Waker(event.set)
        with self._lock:
            self._ack_wakers.add(waker)
        try:
            while True:
                event.clear()
                streams = list(self._streams)
                if streams and all(s.synced_generation >= target for s in streams):
                    return
                await event.wait()
        finally:
            with self._lock:
                self._ack_wakers.discard(waker)

    # -- internals

    def _require(self, chute_id: str) -> ChuteRoute:
        route = self._routes.get(chute_id)
        if route is None:
            raise KeyError(f"no such chute in the routing table: {chute_id}")
        return route

    def _apply(self, routes: list[ChuteRoute], removals: list[str]) -> int:
        with self._lock:
            s = self._snapshot
            clusters = _Resources(s.clusters, s.cluster_versions)
            assignments = _Resources(s.assignments, s.assignment_versions)
            changed = False
            routes_now = dict(self._routes)
            owners = dict(self._owners)
            for chute_id in removals:
                old = routes_now.pop(chute_id, None)
                if old is not None:
                    name = self.cluster_name(old.slug)
                    clusters.pop(name)
                    assignments.pop(name)
                    owners.pop(name, None)
                    changed = True
            for route in routes:
                name = self.cluster_name(route.slug)
                owner = owners.get(name)
                if owner is not None and owner != route.chute_id:
                    raise ValueError(f"chute {route.chute_id}: slug {route.slug!r} belongs to chute {owner}")
                old = routes_now.get(route.chute_id)
                if old == route:
                    continue
                changed = True
                if old is not None and old.slug != route.slug:
                    old_name = self.cluster_name(old.slug)
                    clusters.pop(old_name)
                    assignments.pop(old_name)
                    owners.pop(old_name, None)
                if old is None or _cluster_key(old) != _cluster_key(route):
                    clusters.set(_resource(name, CLUSTER_TYPE, self._cluster(route, name)))
                if old is None or old.slug != route.slug or old.instances != route.instances:
                    assignments.set(_resource(name, ENDPOINT_TYPE, _assignment(route, name)))
                routes_now[route.chute_id] = route
                owners[name] = route.chute_id
            if not changed:
                return s.generation
            self._routes, self._owners = routes_now, owners
            self._snapshot = Snapshot(
                s.generation + 1,
                s.ready,
                clusters.resources,
                assignments.resources,
                clusters.versions,
                assignments.versions,
            )
            generation = self._snapshot.generation
        self._wake_streams()
        return generation

    def _cluster(self, route: ChuteRoute, name: str) -> cluster_pb2.Cluster:
        cluster = cluster_pb2.Cluster()
        cluster.CopyFrom(self._template)
        cluster.name = name
        cluster.alt_stat_name = CHUTE_STAT_PREFIX + route.slug
        cluster.metadata.filter_metadata[METADATA_NAMESPACE].fields["chute_id"].string_value = route.chute_id
        cluster.circuit_breakers.per_host_thresholds.add().max_connections.value = route.concurrency
        if route.instances:
            cluster.outlier_detection.CopyFrom(_OUTLIER_DETECTION)
        return cluster

    def _wake_streams(self) -> None:
        with self._lock:
            wakers = list(self._stream_wakers)
        for wake in wakers:
            wake()

    def _wake_ack_waiters(self) -> None:
        with self._lock:
            wakers = list(self._ack_wakers)
        for wake in wakers:
            wake()

    def _attach(self, stream: Stream, waker: Waker) -> None:
        with self._lock:
            self._streams.add(stream)
            self._stream_wakers.add(waker)

    def _detach(self, stream: Stream, waker: Waker) -> None:
        with self._lock:
            self._streams.discard(stream)
            self._stream_wakers.discard(waker)
        self._wake_ack_waiters()


def _seconds(message: Any, seconds: float) -> None:
    message.FromNanoseconds(round(seconds * 1e9))


def _cluster_key(route: ChuteRoute) -> tuple[str, int, bool]:
    """What a chute's Cluster depends on: instance changes that keep it the same go over EDS only."""
    return route.slug, route.concurrency, bool(route.instances)


def _outlier_detection() -> outlier_detection_pb2.OutlierDetection:
    """A chute cluster's outlier detection, set only while the chute has instances."""
    outlier = outlier_detection_pb2.OutlierDetection()
    # Only failures to reach an instance eject it; a chute answering 5xx is the chute's business.
    outlier.split_external_local_origin_errors = True
    outlier.consecutive_local_origin_failure.value = 1
    outlier.enforcing_consecutive_5xx.value = 0
    outlier.enforcing_success_rate.value = 0
    _seconds(outlier.interval, 1)
    _seconds(outlier.base_ejection_time, 5)
    outlier.max_ejection_percent.value = 100
    return outlier


def _cluster_template(connect_timeout: float) -> cluster_pb2.Cluster:
    """Everything a chute cluster has that does not depend on the chute."""
    cluster = cluster_pb2.Cluster(type=cluster_pb2.Cluster.EDS)
    _seconds(cluster.connect_timeout, connect_timeout)
    eds = cluster.eds_cluster_config.eds_config
    eds.ads.SetInParent()
    eds.resource_api_version = config_source_pb2.V3
    thresholds = cluster.circuit_breakers.thresholds.add()
    thresholds.max_pending_requests.value = MAX_PENDING_REQUESTS
    thresholds.max_requests.value = 1_000_000  # the per-host connection cap is what limits
    thresholds.max_retries.value = 1000
    policy = cluster.load_balancing_policy.policies.add().typed_extension_config
    policy.name = _LEAST_REQUEST
    policy.typed_config.Pack(
        least_request_pb2.LeastRequest(selection_method=least_request_pb2.LeastRequest.FULL_SCAN)
    )
    options = http_protocol_options_pb2.HttpProtocolOptions()
    _seconds(options.common_http_protocol_options.idle_timeout, UPSTREAM_IDLE_TIMEOUT_SECONDS)
    options.explicit_http_config.http_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].Pack(options)
    return cluster


_OUTLIER_DETECTION: Final = _outlier_detection()


def _assignment(route: ChuteRoute, name: str) -> endpoint_pb2.ClusterLoadAssignment:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if route.instances:
        locality = assignment.endpoints.add()
        for instance in sorted(route.instances, key=lambda i: i.instance_id):
            lb_endpoint = locality.lb_endpoints.add()
            address = lb_endpoint.endpoint.address.socket_address
            address.address = instance.host
            address.port_value = instance.port
            metadata = lb_endpoint.metadata.filter_metadata[METADATA_NAMESPACE]
            metadata.fields["instance_id"].string_value = instance.instance_id
    return assignment


def _resource(name: str, type_url: str, message: Any) -> discovery_pb2.Resource:
    data: bytes = message.SerializeToString(deterministic=True)
    version = hashlib.blake2b(data, digest_size=8).hexdigest()
    return discovery_pb2.Resource(
        name=name, version=version, resource=any_pb2.Any(type_url=type_url, value=data)
    )
