"""The exceptions chute files and scripts import from `chutes.exception`, as in the published SDK.

The cord path errors are the ones our cords raise (chutes.chute.cord re-exports them), so
`except InvalidPath` works whichever module it was imported from.
"""

from __future__ import annotations


class InvalidPath(ValueError):
    """A cord path that is not lower-case `/segment[/segment...]`."""


class DuplicatePath(ValueError):
    """Another cord of the chute already uses this path."""


class AuthenticationRequired(RuntimeError):
    """The config file lacks the credentials a signed request needs."""


class NotConfigured(RuntimeError):
    """There is no config file (see `chutes register`, or CHUTES_CONFIG_PATH)."""


class StillProvisioning(RuntimeError):
    """The chute has no instance ready yet (the API answered 503 for the whole provision timeout)."""


__all__ = ["AuthenticationRequired", "DuplicatePath", "InvalidPath", "NotConfigured", "StillProvisioning"]
