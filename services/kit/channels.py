"""Cached client channels for service-to-service calls.

One `grpc.aio` channel per target address for the life of the process: channels multiplex calls
over HTTP/2 and reconnect by themselves, so creating one per call would only add handshakes.
Stubs are cheap and built on demand:
`RegistryServiceStub(channel_at(settings.address_of("registry")))`.
"""

from __future__ import annotations

import grpc

_channels: dict[str, grpc.aio.Channel] = {}


def channel_at(address: str) -> grpc.aio.Channel:
    """The shared channel to `host:port`."""
    channel = _channels.get(address)
    if channel is None:
        channel = grpc.aio.insecure_channel(address, options=[("grpc.enable_retries", 1)])
        _channels[address] = channel
    return channel


async def close_channels() -> None:
    """Close every cached channel (on shutdown)."""
    channels = list(_channels.values())
    _channels.clear()
    for channel in channels:
        await channel.close()
