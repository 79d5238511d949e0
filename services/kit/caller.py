"""Who is calling: the metadata only the gateway may set.

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

#: Headers stripped from every client request at the gateway.
CALLER_HEADERS = (USER_ID_HEADER, AUTH_METHOD_HEADER, "x-chutes-userid")
