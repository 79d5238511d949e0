"""The multipart body of an upload, parsed as it streams (spec 5.5).

The instance PUTs `multipart/form-data` with a `file` field (the bytes) and a `path` field (the
relative filename). The gateway streams that body as HttpBody chunks; `FormStream` feeds them to
a streaming multipart parser and yields the `file` field's bytes as they come, so a file of any
size passes with one chunk in memory. `path` may come before or after `file`: the expected
filename is known from the token, so the bytes stream to their key at once and `path` is checked
whenever it arrives; the write is committed only if the whole body parsed and `path` matched (a
mismatch, a missing field, a cut-off body: the iteration raises and storage keeps nothing).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.kit.errors import FieldViolation, InvalidArgument, Unauthenticated, ValidationFailed

#: The longest `path` value accepted.
MAX_PATH_BYTES = 4096


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ValidationFailed(
            [FieldViolation(("body", "file"), "Expected a multipart/form-data body", "missing")]
        )
    return boundary


class FormStream:
    """Yields the `file` field's bytes from a stream of multipart chunks (module doc)."""

    def __init__(self, boundary: bytes, chunks: AsyncIterable[bytes], expected_path: str) -> None:
        self.chunks = chunks
        self.expected_path = expected_path
        self.path: str | None = None
        self.filename: str | None = None
        self.content_type: str | None = None
        self.file_seen = False
        self.ended = False
        self._events: list[tuple[str, Any]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._field: str | None = None
        self._path_value = bytearray()
        self._in_file = False
        events = self._events
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": lambda: events.append(("begin", None)),
                "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": lambda: events.append(("headers", dict(self._headers))),
                "on_part_data": lambda data, start, end: events.append(("data", bytes(data[start:end]))),
                "on_part_end": lambda: events.append(("end", None)),
                "on_end": lambda: events.append(("done", None)),
            },
        )

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("utf-8")
        self._header_field.clear()
        self._header_value.clear()

    def _check_path(self) -> None:
        if self.path != self.expected_path:
            raise Unauthenticated("Missing or invalid JWT")

    def _events_out(self) -> list[bytes]:
        """Apply the parser's events; the file bytes among them, in order."""
        out: list[bytes] = []
        for kind, value in self._events:
            if kind == "begin":
                self._headers = {}
                self._field = None
            elif kind == "headers":
                _, options = parse_options_header(value.get("content-disposition", ""))
                name = options.get(b"name", b"").decode("utf-8", "replace")
                self._field = name
                if name == "file" and not self.file_seen:
                    self.file_seen = self._in_file = True
                    filename = options.get(b"filename")
                    self.filename = filename.decode("utf-8", "replace") if filename else None
                    self.content_type = value.get("content-type")
            elif kind == "data":
                if self._in_file:
                    out.append(value)
                elif self._field == "path":
                    self._path_value.extend(value)
                    if len(self._path_value) > MAX_PATH_BYTES:
                        raise InvalidArgument("The path field is too long")
            elif kind == "end":
                if self._field == "path" and self.path is None:
                    self.path = self._path_value.decode("utf-8", "replace")
                    self._check_path()
                self._in_file = False
                self._field = None
            elif kind == "done":
                self.ended = True
        self._events.clear()
        return out

    async def file_bytes(self) -> AsyncIterator[bytes]:
        """The file's bytes; raises (so that nothing is stored) unless the body is complete,
        has both fields and `path` is the token's filename."""
        try:
            async for chunk in self.chunks:
                if self.ended or not chunk:
                    continue
                self.parser.write(chunk)
                for piece in self._events_out():
                    yield piece
            self.parser.finalize()
            for piece in self._events_out():
                yield piece
        except MultipartParseError as error:
            raise InvalidArgument(f"Invalid multipart body: {error}") from None
        if not self.ended:
            raise InvalidArgument("Incomplete multipart body")
        missing = [
            name for name, seen in (("file", self.file_seen), ("path", self.path is not None)) if not seen
        ]
        if missing:
            raise ValidationFailed(
                [FieldViolation(("body", name), "Field required", "missing") for name in missing]
            )
        self._check_path()
