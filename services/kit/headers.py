"""The gateway's trusted headers: the metadata only the gateway may set.

The gateway removes every client-sent copy of these headers before anything else runs (a
header_mutation filter), then sets them from a verified credential; services read them from the
call's invocation metadata. `X-Chutes-UserID`, which the published CLI sends on every request, is
removed too: the real API never reads it, and neither do we.
"""

from __future__ import annotations

#: The verified user's id.
USER_ID_HEADER = "x-chutes-user-id"
#: How the caller proved who they are (`api_key`, `hotkey`).
AUTH_METHOD_HEADER = "x-chutes-auth-method"

#: The hotkey whose signature the gateway verified (also before a user exists: registration).
VERIFIED_HOTKEY_HEADER = "x-chutes-verified-hotkey"

#: On an invocation check's allow: how many ms the gateway may reuse it (gateway/verdicts.lua).
#: Between the registry and Envoy only; never forwarded.
VERDICT_REUSE_HEADER = "x-chutes-verdict-reuse-ms"

#: The Host the gateway gives anonymous `GET /chutes/<uuid>` requests it sends to the registry's
#: plain HTTP endpoint (services/registry/anonymous_reads.py) instead of transcoding them. No dot:
#: it can never be a chute's host (`{slug}.{domain}`), whose checks reach the same endpoint.
ANONYMOUS_READS_HOST = "chutes-anonymous-reads"

#: The REST request as the gateway saw it (set by the transcoder); API key scopes are judged on it.
ORIGINAL_METHOD_HEADER = "x-envoy-original-method"
ORIGINAL_PATH_HEADER = "x-envoy-original-path"

#: Headers stripped from every client request at the gateway: the identity headers above, the
#: CLI's unread X-Chutes-UserID, and the REST method/path the transcoder records for services
#: (API key scopes are judged on them, so a client must not be able to choose them).
CALLER_HEADERS = (
    USER_ID_HEADER,
    AUTH_METHOD_HEADER,
    VERIFIED_HOTKEY_HEADER,
    "x-chutes-userid",
    ORIGINAL_METHOD_HEADER,
    ORIGINAL_PATH_HEADER,
)
