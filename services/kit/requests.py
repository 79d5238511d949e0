"""What every handler shares: the type of its call context, and paging.

Handlers take `(request, context: Context)`; list routes read `page`/`limit` (and `offset` on
some) with FastAPI's range errors (422) and the real API's rule that page and offset exclude
each other (400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from services.kit.errors import InvalidArgument, ValidationFailed, out_of_range

#: The context of a gRPC call, as handlers receive it.
Context = grpc.aio.ServicerContext[Any, Any]

#: The real API's default page size.
DEFAULT_LIMIT = 25


@dataclass(frozen=True)
class Page:
    page: int
    limit: int
    #: Rows to skip: `offset` when given, else `page * limit`.
    offset: int


def page_of(
    page: int, limit: int | None, offset: int = 0, *, max_limit: int = 5000, max_offset: int = 5000
) -> Page:
    """A validated page: `page` 0..100, `limit` 1..max_limit (default DEFAULT_LIMIT), `offset`
    0..max_offset (422 when out of range); page and offset together are a 400."""
    limit = DEFAULT_LIMIT if limit is None else limit
    problems = out_of_range(
        (("query", "page"), page, 0, 100),
        (("query", "limit"), limit, 1, max_limit),
        (("query", "offset"), offset, 0, max_offset),
    )
    if problems:
        raise ValidationFailed(problems)
    if page and offset:
        raise InvalidArgument("Cannot specify both page and offset, select <= 1 of these.")
    return Page(page=page, limit=limit, offset=offset or page * limit)
