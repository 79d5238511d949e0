"""Cached client channels for service-to-service calls.

One `grpc.aio` channel per target address for the life of the process: channels multiplex calls
over HTTP/2 and reconnect by themselves, so creating one per call would only add handshakes.
Stubs are cheap and built on demand:
`RegistryServiceStub(channel_at(settings.address_of("registry")))`.

An address may list several replicas (`host:port,host:port`, IP literals): the channel then
balances calls round-robin over them, and a replica that stops is skipped until it is back, so
one replica's restart fails only the calls in flight on it.
"""

from __future__ import annotations

import ipaddress

import grpc

_channels: dict[str, grpc.aio.Channel] = {}


def channel_at(address: str) -> grpc.aio.Channel:
    """The shared channel to `host:port`."""
    channel = _channels.get(address)
    if channel is None:
        target, options = _target_of(address)
        channel = grpc.aio.insecure_channel(target, options=[("grpc.enable_retries", 1), *options])
        _channels[address] = channel
    return channel


def _target_of(address: str) -> tuple[str, list[tuple[str, str]]]:
    """The gRPC target of one `host:port`, or of a list of replicas (gRPC's static `ipv4:`/`ipv6:`
    resolvers take a comma-separated list; the default pick_first would send every call to one)."""
    if "," not in address:
        return address, []
    hosts = [part.rpartition(":")[0].strip("[]") for part in address.split(",")]
    try:
        versions = {ipaddress.ip_address(host).version for host in hosts}
    except ValueError:
        raise ValueError(f"replica addresses must be IP literals: {address!r}") from None
    if len(versions) != 1:
        raise ValueError(f"replica addresses mix IPv4 and IPv6: {address!r}")
    return f"ipv{versions.pop()}:{address}", [("grpc.lb_policy_name", "round_robin")]


async def close_channels() -> None:
    """Close every cached channel (on shutdown)."""
    channels = list(_channels.values())
    _channels.clear()
    for channel in channels:
        await channel.close()
