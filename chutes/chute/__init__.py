"""Chute definitions shared by the SDK and the services (`from chutes.chute import NodeSelector`)."""

from chutes.chute.node_selector import NodeSelector

__all__ = ["NodeSelector"]
