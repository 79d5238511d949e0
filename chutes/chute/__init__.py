"""Chute definitions: the SDK surface chute files import, shared with the services (NodeSelector).

from chutes.chute import Chute, NodeSelector
from chutes.chute.job import Port
"""

from chutes.chute.base import Chute, ChutePack
from chutes.chute.cord import Cord, CordFunction
from chutes.chute.job import Job, Port
from chutes.chute.node_selector import NodeSelector
from chutes.exception import DuplicatePath, InvalidPath

__all__ = [
    "Chute",
    "ChutePack",
    "Cord",
    "CordFunction",
    "DuplicatePath",
    "InvalidPath",
    "Job",
    "NodeSelector",
    "Port",
]
