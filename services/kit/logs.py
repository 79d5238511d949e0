"""Logging with the request id of the call being served on every line.

Envoy gives every request an `x-request-id`; the request interceptor binds it (or a new one for
direct gRPC callers) to `request_id` for the duration of the call, so a REST request can be
followed from the gateway's log into each service it touched.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

#: The id of the request being served by the current task ("-" outside a call).
request_id: ContextVar[str] = ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """Log to stderr as `time level service [request id] logger: message`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {service} [%(request_id)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
