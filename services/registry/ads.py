"""Envoy's side of the control plane: one delta ADS stream per connected Envoy (CDS + EDS), fed
by the RoutingTable of xds.py. State-of-the-world streams are refused with UNIMPLEMENTED; streams
get no answer before the table is marked ready (an empty answer would make Envoy drop every
chute cluster).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from services.registry.xds import CLUSTER_TYPE, ENDPOINT_TYPE, RoutingTable, Snapshot, Waker

log = logging.getLogger(__name__)

# ---- one Envoy's stream -----------------------------------------------------------------------


@dataclass
class _Subscription:
    """One resource type on one stream, as the delta protocol tracks it."""

    started: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    #: name -> version Envoy has (as far as we know: optimistic, from what we sent).
    sent: dict[str, str] = field(default_factory=dict)
    #: The first request of the type is answered even when there is nothing to send: Envoy's
    #: initial fetch (and so its readiness) waits for it.
    owes_answer: bool = False

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


_TYPES: Final = (CLUSTER_TYPE, ENDPOINT_TYPE)


class Stream:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.node = ""
        self.subscriptions = {t: _Subscription() for t in _TYPES}
        self.outstanding: dict[str, int] = {}  # nonce -> generation it was sent at
        self.nonce = 0
        #: The latest generation Envoy rejected a response of (it keeps its previous config).
        self.nacked_generation = -1
        self.synced_generation = -1

    def handle(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        if request.HasField("node") and not self.node:
            self.node = request.node.id or request.node.cluster
            log.info("xds: envoy %s connected from %s", self.node, self.peer)
        if request.response_nonce:
            generation = self.outstanding.pop(request.response_nonce, -1)
            if request.HasField("error_detail"):
                self.nacked_generation = max(self.nacked_generation, generation)
                log.error(
                    "xds: envoy %s rejected %s (nonce %s): %s",
                    self.node,
                    request.type_url,
                    request.response_nonce,
                    request.error_detail.message,
                )
        subscription = self.subscriptions.get(request.type_url)
        if subscription is None:
            if request.type_url:
                log.warning("xds: %s asked for %s, which is not served", self.node, request.type_url)
            return
        if not subscription.started:
            subscription.started = True
            subscription.owes_answer = True
            subscription.sent.update(request.initial_resource_versions)
            if not request.resource_names_subscribe:
                subscription.wildcard = True  # the legacy wildcard: an empty first subscribe
        for name in request.resource_names_subscribe:
            if name == "*":
                subscription.wildcard = True
            else:
                subscription.names.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                subscription.wildcard = False
            else:
                subscription.names.discard(name)
            if not subscription.wants(name):
                subscription.sent.pop(name, None)

    def responses(self, snapshot: Snapshot) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        """What Envoy lacks of `snapshot`: clusters first, then the assignments (those of every
        cluster sent now go out again)."""
        out = []
        for type_url in _TYPES:
            subscription = self.subscriptions[type_url]
            if not subscription.started:
                continue
            resources = snapshot.of(type_url)
            versions = snapshot.versions_of(type_url)
            sent = subscription.sent
            if subscription.wildcard:
                updated = [resources[n] for n, v in versions.items() if sent.get(n) != v]
            else:
                updated = [
                    resources[n] for n in subscription.names if n in versions and sent.get(n) != versions[n]
                ]
            removed = [n for n in sent if n not in versions]
            if not (updated or removed or subscription.owes_answer):
                continue
            subscription.owes_answer = False
            for resource in updated:
                subscription.sent[resource.name] = resource.version
            for name in removed:
                del subscription.sent[name]
            if type_url == CLUSTER_TYPE:
                # A (re)sent cluster needs its assignment again; a removed one unsubscribes.
                endpoints = self.subscriptions[ENDPOINT_TYPE].sent
                for resource in updated:
                    endpoints.pop(resource.name, None)
                for name in removed:
                    endpoints.pop(name, None)
            self.nonce += 1
            nonce = str(self.nonce)
            self.outstanding[nonce] = snapshot.generation
            out.append(
                discovery_pb2.DeltaDiscoveryResponse(
                    system_version_info=str(snapshot.generation),
                    type_url=type_url,
                    resources=updated,
                    removed_resources=removed,
                    nonce=nonce,
                )
            )
        return out

    def synced(self, snapshot: Snapshot) -> bool:
        """Envoy has ACKed all it was sent, which is all of `snapshot`, every cluster with its
        assignment."""
        if (
            self.outstanding
            or self.nacked_generation >= snapshot.generation
            or not self.subscriptions[CLUSTER_TYPE].started
        ):
            return False
        clusters = self.subscriptions[CLUSTER_TYPE]
        endpoints = self.subscriptions[ENDPOINT_TYPE]
        if clusters.sent != snapshot.cluster_versions:
            return False
        if not endpoints.names >= snapshot.cluster_versions.keys():
            return False  # Envoy has yet to ask for some cluster's assignment
        sent = endpoints.sent
        for name, version in snapshot.assignment_versions.items():
            if sent.get(name) != version:
                return False
        return True


_WAKE: Final = object()
_END: Final = object()


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Delta ADS over a `RoutingTable`. Add it to a grpc.aio server with
    `ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)`."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table

    async def StreamAggregatedResources(
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "this control plane serves delta xDS only: use ads_config api_type DELTA_GRPC",
        )

    async def DeltaAggregatedResources(
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        table = self.table
        stream = Stream(context.peer())
        queue: asyncio.Queue[object] = asyncio.Queue()
        woken = False

        def wake() -> None:
            nonlocal woken
            if not woken:  # one pending wake-up covers any number of changes
                woken = True
                queue.put_nowait(_WAKE)

        waker = Waker(wake)
        table._attach(stream, waker)
        reader = asyncio.create_task(_read(request_iterator, queue))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if item is _WAKE:
                    woken = False
                else:
                    assert isinstance(item, discovery_pb2.DeltaDiscoveryRequest)
                    stream.handle(item)
                if not queue.empty():
                    continue  # take every queued request in before answering
                snapshot = table._snapshot
                if not snapshot.ready:
                    continue  # nothing before the table is loaded: an empty answer wipes Envoy
                for response in stream.responses(snapshot):
                    yield response
                if stream.synced_generation < snapshot.generation and stream.synced(snapshot):
                    stream.synced_generation = snapshot.generation
                    table._wake_ack_waiters()
        finally:
            table._detach(stream, waker)
            reader.cancel()
            log.info("xds: envoy %s disconnected", stream.node or stream.peer)


async def _read(requests: Any, queue: asyncio.Queue[object]) -> None:
    try:
        async for request in requests:
            queue.put_nowait(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the stream broke: the handler ends
        log.debug("xds: stream read ended: %r", exc)
    finally:
        queue.put_nowait(_END)


def add_to_server(servicer: AdsServicer, server: grpc.aio.Server) -> None:
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
