"""The caller model: who is calling, what their key may touch, and its wire form.

A `Caller` is what the identity service answers for a credential; services receive it from the
kit's authenticator (services/kit/auth.py) and never look users up themselves.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Protocol

from google.api import annotations_pb2
from google.protobuf import descriptor_pool

from chutes.identity.v1 import identity_pb2
from services.kit.errors import Unauthenticated
from services.kit.roles import Role, has_role


@dataclass(frozen=True)
class Scope:
    """What a scoped API key may touch: an object type, optionally one object and one action."""

    object_type: str
    object_id: str | None = None
    action: str | None = None


@dataclass(frozen=True)
class Caller:
    user_id: str
    username: str
    permissions_bitmask: int = 0
    netuids: tuple[int, ...] = ()
    balance: float = 0.0
    #: Hotkey callers and admin keys; scoped keys are not.
    admin: bool = True
    scopes: tuple[Scope, ...] = field(default_factory=tuple)
    auth_method: str = "hotkey"
    api_key_id: str = ""
    #: The user's hotkey SS58 address; "" when none.
    hotkey: str = ""

    def has_role(self, role: Role) -> bool:
        return has_role(self.permissions_bitmask, role)


class CallerLookup(Protocol):
    """Where callers come from: the identity service (over gRPC), or identity's own store."""

    async def by_api_key(self, authorization: str) -> Caller:
        """Raise Unauthenticated for a malformed or unknown key, Unavailable if it cannot tell."""
        ...

    async def by_user_id(self, user_id: str) -> Caller:
        """Raise Unauthenticated for an unknown user, Unavailable if it cannot tell."""
        ...


class MalformedCredential(Unauthenticated):
    """A credential that cannot be a key at all: refused even on routes that allow anonymity."""


def scope_allows(scopes: tuple[Scope, ...], method: str, path: str) -> bool:
    """Whether a scoped key may make this REST request (spec 2.4, with the intended object
    type: the first path segment, where the real API takes the last one and so refuses almost
    everything)."""
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if not segments:
        return False
    object_type = segments[0]
    object_id = segments[1] if len(segments) > 1 else None
    action = {
        "GET": "read",
        "HEAD": "read",
        "POST": "write",
        "PUT": "write",
        "PATCH": "write",
        "DELETE": "delete",
    }.get(method.upper())
    if method.upper() == "POST" and re.match(r"^/chutes/[^/]+/.+$", path):
        action = "invoke"
    return any(
        scope.object_type == object_type
        and (scope.object_id is None or scope.object_id == object_id)
        and (scope.action is None or scope.action == action)
        for scope in scopes
    )


def _variable_pattern(match: re.Match[str]) -> str:
    """The regex of one (escaped) path variable: `{name=**}` spans segments, `{name}` is one."""
    spans = "**" in (match.group(2) or "").replace("\\", "")
    return "(.+)" if spans else "([^/]+)"


@functools.cache
def _path_templates(grpc_method: str) -> tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...]:
    """(REST method, path regex with one group per variable, the variables' top-level fields) of
    each HTTP rule of `/package.Service/Method`; none when it has no rule or is unknown."""
    try:
        method = descriptor_pool.Default().FindMethodByName(grpc_method.strip("/").replace("/", "."))
    except KeyError:
        return ()
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    out = []
    for binding in (rule, *rule.additional_bindings):
        verb = binding.WhichOneof("pattern")
        if verb in (None, "custom"):
            continue
        template = getattr(binding, verb)
        names = tuple(m.group(1).split(".")[0] for m in re.finditer(r"\{([^}=]+)", template))
        pattern = re.sub(r"\\\{([^}=]+)(=[^}]*)?\\\}", _variable_pattern, re.escape(template.rstrip("/")))
        out.append((verb.upper(), re.compile(pattern + "/?"), names))  # with or without the slash
    return tuple(out)


#: What the transcoder leaves escaped in a path variable (RFC 6570 reserved characters).
_RESERVED = frozenset(":/?#[]@!$&'()*+,;=")


def _unescaped(value: str) -> str:
    """A path variable as the transcoder binds it: escapes decoded, except reserved characters'."""
    kept = re.sub(
        r"%([0-9A-Fa-f]{2})",
        lambda m: "%25" + m.group(1) if chr(int(m.group(1), 16)) in _RESERVED else m.group(0),
        value,
    )
    return urllib.parse.unquote(kept)


def acts_on_its_path(grpc_method: str, request: object, rest_method: str, path: str) -> bool:
    """Whether the request message names the objects its REST path names: a scoped key is judged
    on the path (`scope_allows`), so the message must act on exactly those. The gateway keeps
    query parameters and `body: "*"` fields from setting a path variable's field (issue 16);
    this holds it in the services too, whatever the transcoder does."""
    bare = path.split("?", 1)[0]
    rest_method = "GET" if rest_method.upper() == "HEAD" else rest_method.upper()
    for verb, template, names in _path_templates(grpc_method):
        match = template.fullmatch(bare) if verb == rest_method else None
        if match is None:
            continue
        return all(
            str(getattr(request, name, None)) == _unescaped(value)
            for name, value in zip(names, match.groups(), strict=True)
        )
    return not _path_templates(grpc_method)  # a REST request its rules do not match: refused


def scope_to_proto(scope: Scope) -> identity_pb2.ApiKeyScope:
    return identity_pb2.ApiKeyScope(
        object_type=scope.object_type, object_id=scope.object_id, action=scope.action
    )


def caller_to_proto(caller: Caller) -> identity_pb2.Caller:
    return identity_pb2.Caller(
        user_id=caller.user_id,
        username=caller.username,
        permissions_bitmask=caller.permissions_bitmask,
        netuids=caller.netuids,
        balance=caller.balance,
        admin=caller.admin,
        scopes=[scope_to_proto(s) for s in caller.scopes],
        auth_method=caller.auth_method,
        api_key_id=caller.api_key_id,
        hotkey=caller.hotkey,
    )


def caller_from_proto(message: identity_pb2.Caller) -> Caller:
    return Caller(
        user_id=message.user_id,
        username=message.username,
        permissions_bitmask=message.permissions_bitmask,
        netuids=tuple(message.netuids),
        balance=message.balance,
        admin=message.admin,
        scopes=tuple(
            Scope(
                s.object_type,
                s.object_id if s.HasField("object_id") else None,
                s.action if s.HasField("action") else None,
            )
            for s in message.scopes
        ),
        auth_method=message.auth_method,
        api_key_id=message.api_key_id,
        hotkey=message.hotkey,
    )
