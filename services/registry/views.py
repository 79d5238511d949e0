"""Rows of the registry schema to protobuf messages: ChuteResponse and ImageResponse as the real
API shapes them, and a cache of built responses for the read paths."""

from __future__ import annotations

import base64
import json
import math
import struct
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from google.api import httpbody_pb2
from google.protobuf import json_format, message_factory, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from chutes.registry.v1 import registry_pb2
from services.kit.messages import timestamp
from services.registry import bounties
from services.registry.pricing import (
    estimated_price,
    legacy_billing,
    live_factors,
    multiplier_factors,
    selector_of,
)

#: Cord keys dropped from `cord_refs` unless the list asks for schemas.
SCHEMA_KEYS = ("input_schema", "minimal_input_schema", "output_schema")
LOGO_CDN = "https://logos.chutes.ai/logos"


class ResponseCache:
    """Built responses, least recently used out first.

    A chute's response changes only when its row is updated (which moves `updated_at`), its
    invocation count moves or its instances change, so `(kind, chute_id, updated_at,
    invocation_count, instances JSON)` identifies one exactly;
    readers look that key up with a light query and build (and fetch the full row) only on a miss.
    """

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> Any:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        # A column changed without moving `updated_at` (an UPDATE by another service or an
        # operator) is not in the key: the change notifications clear it (ReadCache.changed).
        self._items.clear()


_MESSAGE, _STRING, _BOOL = (
    FieldDescriptor.CPPTYPE_MESSAGE,
    FieldDescriptor.CPPTYPE_STRING,
    FieldDescriptor.CPPTYPE_BOOL,
)
_AS_IS = (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32, _BOOL)
_INT64 = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)
_FLOATS = (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT)
#: Per message type: the JSON of its fields without presence, as printed when unset, and each
#: field's printing: 0 scalar, 1 message, 2 repeated scalars, 3 repeated messages, 4 map.
_SHAPES: dict[str, tuple[dict[str, Any], dict[str, tuple[int, Any]]]] = {}


def _scalar(field: Any, value: Any) -> Any:
    """A scalar field's JSON value, as json_format prints it (proto3 JSON)."""
    kind = field.cpp_type
    if kind in _AS_IS:
        return value
    if kind == _STRING:
        return base64.b64encode(value).decode() if field.type == FieldDescriptor.TYPE_BYTES else value
    if kind in _INT64:
        return str(value)
    if kind in _FLOATS:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if kind == FieldDescriptor.CPPTYPE_FLOAT:
            # The shortest decimal that is the same float32 (json_format's ToShortestFloat).
            for digits in range(6, 10):
                shortest = float(f"{value:.{digits}g}")
                if struct.unpack("<f", struct.pack("<f", shortest))[0] == value:
                    return shortest
        return value
    enum_value = field.enum_type.values_by_number.get(value)
    if field.enum_type.full_name == "google.protobuf.NullValue":
        return None
    return value if enum_value is None else enum_value.name


def _shape(descriptor: Any) -> tuple[dict[str, Any], dict[str, tuple[int, Any]]]:
    shape = _SHAPES.get(descriptor.full_name)
    if shape is None:
        defaults: dict[str, Any] = {}
        kinds: dict[str, tuple[int, Any]] = {}
        for field in descriptor.fields:
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if is_map:
                kinds[field.name] = (4, field.message_type.fields_by_name["value"])
            elif field.is_repeated:
                kinds[field.name] = (3 if field.cpp_type == _MESSAGE else 2, field)
            else:
                kinds[field.name] = (1 if field.cpp_type == _MESSAGE else 0, field)
            if not field.has_presence:
                defaults[field.name] = (
                    {} if is_map else [] if field.is_repeated else _scalar(field, field.default_value)
                )
        shape = _SHAPES[descriptor.full_name] = (defaults, kinds)
    return shape


def _json_object(message: Any) -> Any:
    """What json_format.MessageToDict makes of `message` with the transcoder's options, in a
    fraction of the time: ListFields (in C) for what is set, the printed defaults of the rest
    prepared once per type, Timestamp, Struct, Value and ListValue by hand (other well-known
    types go to MessageToDict). tests/test_read_freshness.py holds it to MessageToDict."""
    name = message.DESCRIPTOR.full_name
    if name.startswith("google.protobuf."):
        if name == "google.protobuf.Timestamp":
            return message.ToJsonString()
        if name == "google.protobuf.Struct":
            return {k: _json_object(v) for k, v in message.fields.items()}
        if name == "google.protobuf.ListValue":
            return [_json_object(v) for v in message.values]
        if name == "google.protobuf.Value":
            which = message.WhichOneof("kind")
            if which in ("string_value", "bool_value"):
                return getattr(message, which)
            if which == "struct_value":
                return _json_object(message.struct_value)
            if which == "list_value":
                return [_json_object(v) for v in message.list_value.values]
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    defaults, kinds = _shape(message.DESCRIPTOR)
    js = dict(defaults)
    for field, value in message.ListFields():
        kind, described = kinds[field.name]
        if kind == 0:
            js[field.name] = _scalar(described, value)
        elif kind == 1:
            js[field.name] = _json_object(value)
        elif kind == 2:
            js[field.name] = [_scalar(described, v) for v in value]
        elif kind == 3:
            js[field.name] = [_json_object(v) for v in value]
        else:
            js[field.name] = {
                (("true" if k else "false") if isinstance(k, bool) else str(k)): (
                    _json_object(v) if described.cpp_type == _MESSAGE else _scalar(described, v)
                )
                for k, v in value.items()
            }
    return js


def dumps(value: Any) -> bytes:
    """The suite's JSON printer for answers: compact, UTF-8, keys sorted (a map's and a Struct's
    order is not kept by protobuf, so without sorting the same message could print two ways).
    orjson: ~4x faster than json.dumps on a chute (bench/README.md, issue 14); its floats are the
    shortest that read back the same (`1e-7` where json.dumps writes `1e-07`)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def json_body(message: Message) -> httpbody_pb2.HttpBody:
    """The JSON a REST client gets for `message`: what the gateway's transcoder printed for it
    (its print options in gateway/render.py: proto field names, fields without presence always
    printed), made here once per built answer instead of by Envoy per request."""
    return httpbody_pb2.HttpBody(content_type="application/json", data=dumps(_json_object(message)))


@dataclass(slots=True)
class Answer:
    """A GET answer as cached, and what it shows that moves without a write (the live bounty's
    age and time left, the manual boost) as they were when it was read.

    It holds the chute's row only until its first rendering (JSON for REST, the typed message for
    gRPC; a REST miss never builds the protobuf message), then that rendering alone: bytes, or one
    protobuf object. A row is hundreds of Python objects (decoded cords, schemas, instances), and
    20,000 cached rows made each full garbage collection of the registry ~1 s long: the p99 of
    reads (bench/README.md, issue 14). The other rendering, when asked for, is made from the first."""

    chute_id: str
    row: Mapping[str, Any] | None
    tao_usd: float | None
    bounty_age: float | None
    bounty_left: float | None
    manual_boost: float | None
    built: float  # time.monotonic()
    _message: registry_pb2.Chute | None = None
    _body: bytes | None = None

    def message(self, live: Mapping[str, Any]) -> registry_pb2.Chute:
        """The typed answer with the live values `live` (`live()`)."""
        if self._message is None:
            if self.row is not None:
                self._message = chute_message(self.row, priced=True, tao_usd=self.tao_usd)
            else:
                assert self._body is not None
                self._message = json_format.Parse(self._body, registry_pb2.Chute())
            self.row = None
        return with_live_boosts(self._message, live)

    def json(self, live: Mapping[str, Any]) -> bytes:
        """The answer's JSON with the live values `live`: the same bytes `message(live)` prints."""
        if self._body is None:
            if self.row is not None:
                self._body = dumps(chute_view(self.row, priced=True, tao_usd=self.tao_usd))
            else:
                assert self._message is not None
                self._body = json_body(self._message).data
            self.row = None
        if not shows_live(live):
            return self._body
        return dumps(view_with_live_boosts(orjson.loads(self._body), live))

    def live(self, now: float) -> dict[str, Any] | None:
        """The live values now (as `LIVE_SELECT` would read them); None once the bounty expired."""
        if self.bounty_age is None:
            return {"bounty_age": None, "manual_boost": self.manual_boost}
        elapsed = now - self.built
        if self.bounty_left is None or elapsed >= self.bounty_left:
            return None
        return {"bounty_age": self.bounty_age + elapsed, "manual_boost": self.manual_boost}


@dataclass
class CachedPage:
    """A list page as cached, and its JSON once a REST client asked for it."""

    response: Any
    body: httpbody_pb2.HttpBody | None = None


class ReadCache:
    """Read answers served without a query (issue 14): GETs by (reference, viewer), list pages by
    their filter. Right only while every change is heard (freshness.ReadFollower): a chute's
    change drops its GETs and every GET by name (a chute that became visible may now be the
    one a name means), a new or renamed chute or an image's change drops all; any change drops
    the lists (a count, an order, an item may have moved).
    A build that raced with a change is not kept: `generation` moves with every change, and an
    answer is put only under the generation read before its query."""

    def __init__(self, built: ResponseCache, size: int = 20_000, lists: int = 256) -> None:
        #: The list's cache of built items (keyed by what a light query reads), cleared with the
        #: rest: it cannot see a change that leaves `updated_at` as it was.
        self.built = built
        self.size, self.list_size = size, lists
        self.generation = 0
        self.serving = False
        self._gets: OrderedDict[tuple[Any, ...], Answer] = OrderedDict()
        self._by_chute: dict[str, set[tuple[Any, ...]]] = {}
        #: GETs whose reference is not the id of the chute they answer (a name).
        self._named: set[tuple[Any, ...]] = set()
        self._lists: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def start_serving(self) -> None:
        self.clear()
        self.serving = True

    def stop_serving(self) -> None:
        self.serving = False
        self.clear()

    def clear(self) -> None:
        self.generation += 1
        self.built.clear()
        self._gets.clear()
        self._by_chute.clear()
        self._named.clear()
        self._lists.clear()

    def changed(self, payload: str) -> None:
        """A notification: a chute id, `+<id>` (a new or renamed chute) or `*` (anything may
        have changed)."""
        if payload.startswith(("*", "+")):
            self.clear()
            return
        self.generation += 1
        self._lists.clear()
        self.built.clear()
        for key in [*self._named, *self._by_chute.get(payload, ())]:
            self._drop(key)

    def get(self, key: tuple[Any, ...]) -> Answer | None:
        if not self.serving:
            return None
        found = self._gets.get(key)
        if found is not None:
            self._gets.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], answer: Answer, generation: int) -> None:
        if not self.serving or generation != self.generation:
            return
        self._gets[key] = answer
        self._by_chute.setdefault(answer.chute_id, set()).add(key)
        if key[0] != answer.chute_id:
            self._named.add(key)
        if len(self._gets) > self.size:
            self._drop(next(iter(self._gets)))

    def get_list(self, key: tuple[Any, ...]) -> Any:
        if not self.serving:
            return None
        found = self._lists.get(key)
        if found is not None:
            self._lists.move_to_end(key)
        return found

    def put_list(self, key: tuple[Any, ...], response: Any, generation: int) -> None:
        if not self.serving or generation != self.generation:
            return
        self._lists[key] = response
        if len(self._lists) > self.list_size:
            self._lists.popitem(last=False)

    def _drop(self, key: tuple[Any, ...]) -> None:
        self._named.discard(key)
        answer = self._gets.pop(key, None)
        if answer is not None:
            keys = self._by_chute.get(answer.chute_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_chute[answer.chute_id]


def cache_key(kind: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    # invocation_count moves without an edit of the chute (the metrics service adds to it).
    return (kind, row["chute_id"], row["updated_at"], row["invocation_count"], row["instances"])


def loads(value: Any) -> Any:
    """JSON values arrive as text (plain asyncpg, and `instances`, cast to text so it can be part
    of a cache key) or already decoded (SQLAlchemy's asyncpg dialect registers JSON codecs)."""
    return json.loads(value) if isinstance(value, str) else value


def cord_ref_id(cords: list[dict[str, Any]], name: str, template: str | None) -> str:
    """uuid5 of the cords' JSON, so chutes with the same cords share one entry in `cord_refs`; for
    vLLM chutes the model name in the schemas' defaults is blanked so identical ones match."""
    text = json.dumps(cords, separators=(",", ":"))
    if template == "vllm":
        text = text.replace(f'"default":{json.dumps(name)}', '"default":""')
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


def logo_url(logo_id: str | None) -> str:
    return f"{LOGO_CDN}/{logo_id}.webp" if logo_id else ""


# ---- answers: one mapping from rows, two renderings -------------------------------------------
#
# `*_values` map a row to plain values by field name (None: unset; a nested message as a dict,
# a Timestamp as a datetime, a Struct as a dict). `build` makes the typed message of such values
# and `printed` the JSON object that message prints, both led by the message's descriptor: a
# REST answer can skip protobuf entirely (~3x cheaper for a chute) and still be, byte for byte,
# what the typed answer prints (tests/test_read_freshness.py holds them together).


def cord_values(cord: Mapping[str, Any]) -> dict[str, Any]:
    def schema(name: str) -> Any:
        value = cord.get(name)
        return value if isinstance(value, dict) else None

    return {
        "method": cord.get("method") or "",
        "path": cord.get("path") or "",
        "function": cord.get("function") or "",
        "stream": bool(cord.get("stream")),
        "passthrough": bool(cord.get("passthrough")),
        "public_api_path": cord.get("public_api_path") or "",
        "public_api_method": cord.get("public_api_method") or "",
        "input_schema": schema("input_schema"),
        "output_schema": schema("output_schema"),
        "minimal_input_schema": schema("minimal_input_schema"),
        "output_content_type": cord.get("output_content_type") or "",
    }


def job_values(job: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": job.get("name") or "",
        "upload": bool(job.get("upload")),
        "timeout": job.get("timeout"),
        "disk_gb": job.get("disk_gb"),
        "ports": [
            {"name": p.get("name") or "", "port": p.get("port") or 0, "proto": p.get("proto") or "",
             "default": p.get("default")}
            for p in job.get("ports") or []
        ],
    }  # fmt: skip


def image_values(row: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """The ImageResponse of a row (columns named `<prefix><column>` when joined with chutes)."""

    def col(name: str) -> Any:
        return row[prefix + name]

    return {
        "image_id": col("image_id"),
        "user_id": col("user_id"),
        "name": col("name"),
        "tag": col("tag"),
        "readme": col("readme"),
        "public": col("public"),
        "status": col("status"),
        "created_at": col("created_at"),
        "build_started_at": col("build_started_at"),
        "build_completed_at": col("build_completed_at"),
        "user": {"username": col("username"), "user_id": col("user_id")},
        "logo_id": col("logo_id") or "",
        "patch_version": col("patch_version"),
        "chutes_version": col("chutes_version") or "",
        "logo": logo_url(col("logo_id")),
    }


def image_message(row: Mapping[Any, Any], prefix: str = "") -> registry_pb2.Image:
    image: registry_pb2.Image = build(registry_pb2.Image, image_values(row, prefix))
    return image


def chute_values(
    row: Mapping[str, Any],
    *,
    priced: bool,
    tao_usd: float | None = None,
    in_list: bool = False,
) -> dict[str, Any]:
    """The ChuteResponse of a row. `priced`: GET and list inject price and multiplier (deploy
    and update do not, as in the real API). `in_list`: cords are replaced by `cord_ref_id`."""
    selector = selector_of(loads(row["node_selector"]))
    cords = loads(row["cords"]) or []
    instances = loads(row["instances"]) if "instances" in row else []
    supported = selector.supported_gpus
    values = {
        "chute_id": row["chute_id"],
        "name": row["name"],
        "tagline": row["tagline"],
        "readme": row["readme"],
        "public": row["public"],
        "version": row["version"],
        "tool_description": row["tool_description"] or "",
        "slug": row["slug"],
        "standard_template": row["standard_template"] or "",
        "cords": None if in_list else [cord_values(c) for c in cords],
        "jobs": [job_values(j) for j in loads(row["jobs"]) or []],
        "cord_ref_id": cord_ref_id(cords, row["name"], row["standard_template"]) if in_list else None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "image": image_values(row, prefix="i_"),
        "user": {"username": row["username"], "user_id": row["user_id"]},
        "supported_gpus": supported,
        "node_selector": {
            **selector.stored,
            "compute_multiplier": selector.compute_multiplier,
            "supported_gpus": supported,
        },
        "invocation_count": row["invocation_count"],
        "instances": [
            {
                "instance_id": i["instance_id"],
                "region": i["region"],
                "active": i["active"],
                "verified": i["verified"],
                "last_verified_at": datetime.fromisoformat(i["last_verified_at"])
                if i["last_verified_at"]
                else None,
            }
            for i in instances
        ],
        "logo_id": row["logo_id"] or "",
        "openrouter": row["openrouter"],
        "chutes_version": row["chutes_version"] or "",
        "revision": row["revision"] or "",
        "concurrency": row["concurrency"],
        "boost": row["boost"],
        "max_instances": row["max_instances"],
        "shutdown_after_seconds": row["shutdown_after_seconds"],
        "scaling_threshold": row["scaling_threshold"],
        "preemptible": row["public"] or legacy_billing(row),
        "allow_external_egress": row["allow_external_egress"],
        "tee": row["tee"],
        "logo": logo_url(row["logo_id"]),
        "hot": any(i["active"] and i["verified"] for i in instances),
        "immutable": row["immutable"],
        "disabled": row["disabled"],
        "lock_modules": row["lock_modules"],
        "encrypted_fs": row["encrypted_fs"],
    }
    if priced:
        factors = multiplier_factors(row, selector)
        product = 1.0
        for factor in factors.values():
            product *= factor
        values["effective_compute_multiplier"] = product
        values["compute_multiplier_factors"] = factors
        values["current_estimated_price"] = estimated_price(row, selector, tao_usd)
    return values


def chute_message(
    row: Mapping[str, Any], *, priced: bool, tao_usd: float | None = None, in_list: bool = False
) -> registry_pb2.Chute:
    """The ChuteResponse of a row, typed (`chute_values`)."""
    chute: registry_pb2.Chute = build(
        registry_pb2.Chute, chute_values(row, priced=priced, tao_usd=tao_usd, in_list=in_list)
    )
    return chute


def chute_view(
    row: Mapping[str, Any], *, priced: bool, tao_usd: float | None = None, in_list: bool = False
) -> dict[str, Any]:
    """The JSON object `chute_message` of the same row prints, without building it."""
    return printed(
        registry_pb2.Chute.DESCRIPTOR, chute_values(row, priced=priced, tao_usd=tao_usd, in_list=in_list)
    )


_TIMESTAMP, _STRUCT = "google.protobuf.Timestamp", "google.protobuf.Struct"
_CLASSES: dict[str, Any] = {}


def _class_of(descriptor: Any) -> Any:
    found = _CLASSES.get(descriptor.full_name)
    if found is None:
        found = _CLASSES[descriptor.full_name] = message_factory.GetMessageClass(descriptor)
    return found


def build(message_class: Any, values: Mapping[str, Any]) -> Any:
    """The message of `message_class` holding `values` (see the section's comment)."""
    _, kinds = _shape(message_class.DESCRIPTOR)
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        kind, field = kinds[name]
        if kind == 1:
            fields[name] = _build_one(field.message_type, value)
        elif kind == 3:
            fields[name] = [_build_one(field.message_type, v) for v in value]
        else:  # scalars, repeated scalars and maps of scalars: the constructor takes them as they are
            fields[name] = value
    return message_class(**fields)


def _build_one(descriptor: Any, value: Any) -> Any:
    if descriptor.full_name == _TIMESTAMP:
        return timestamp(value)
    if descriptor.full_name == _STRUCT:
        struct = struct_pb2.Struct()
        struct.update(value)
        return struct
    return build(_class_of(descriptor), value)


def printed(descriptor: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object `build` of the same values prints (as `_json_object` prints it)."""
    defaults, _ = _shape(descriptor)
    fields = _printing(descriptor)
    js = dict(defaults)
    for name, value in values.items():
        if value is None:
            continue
        kind, field, convert = fields[name]
        if kind == 0:
            js[name] = value if convert is None else convert(value)
        elif kind == 1:
            js[name] = _printed_one(field.message_type, value)
        elif kind == 2:
            js[name] = list(value) if convert is None else [convert(v) for v in value]
        elif kind == 3:
            js[name] = [_printed_one(field.message_type, v) for v in value]
        else:  # a map of scalars (the registry's answers have no other)
            js[name] = {str(k): v if convert is None else convert(v) for k, v in value.items()}
    return js


#: Per message type, per field: its kind (as in `_shape`), descriptor, and how a plain value of
#: it prints (None: as it is, as strings, bools and 32-bit integers do).
_PRINTING: dict[str, dict[str, tuple[int, Any, Any]]] = {}


def _printing(descriptor: Any) -> dict[str, tuple[int, Any, Any]]:
    found = _PRINTING.get(descriptor.full_name)
    if found is None:
        found = {}
        # For a map, `field` is its values' field (`_shape`).
        for name, (kind, field) in _shape(descriptor)[1].items():
            plain = field.cpp_type in _AS_IS or (
                field.cpp_type == _STRING and field.type != FieldDescriptor.TYPE_BYTES
            )
            found[name] = (kind, field, None if plain or kind in (1, 3) else _converter(field))
        _PRINTING[descriptor.full_name] = found
    return found


def _converter(field: Any) -> Any:
    if field.cpp_type in _FLOATS:
        # A double field holds a float even when given an int.
        return lambda value: _scalar(field, float(value))
    return lambda value: _scalar(field, value)


def _printed_one(descriptor: Any, value: Any) -> Any:
    if descriptor.full_name == _TIMESTAMP:
        return timestamp_json(value)
    if descriptor.full_name == _STRUCT:
        return _struct_json(value)
    return printed(descriptor, value)


def timestamp_json(value: datetime) -> str:
    """What Timestamp.ToJsonString prints for the Timestamp of `value` (naive: UTC): RFC 3339,
    Z, and 0, 3 or 6 fractional digits."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    micros = value.microsecond
    text = value.replace(microsecond=0).isoformat()
    if micros == 0:
        return text + "Z"
    if micros % 1000 == 0:
        return f"{text}.{micros // 1000:03d}Z"
    return f"{text}.{micros:06d}Z"


def _struct_json(value: Any) -> Any:
    """A JSON value as a Struct holding it prints: every number a double."""
    if isinstance(value, dict):
        return {k: _struct_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_struct_json(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    return float(value)


def shows_live(light: Mapping[str, Any]) -> bool:
    """Whether the live values `light` change an answer (a live bounty, or a manual boost)."""
    return light["bounty_age"] is not None or bool(live_factors(light["manual_boost"], None))


def view_with_live_boosts(view: dict[str, Any], light: Mapping[str, Any]) -> dict[str, Any]:
    """`with_live_boosts` for a printed answer (`chute_view`)."""
    if not shows_live(light):
        return view
    age = light["bounty_age"]
    factors = live_factors(light["manual_boost"], age)
    live = dict(view)
    if age is not None:
        live["bounty"] = bounties.amount(age)
    if "effective_compute_multiplier" in live:
        product = live["effective_compute_multiplier"]
        for value in factors.values():
            product *= value
        live["effective_compute_multiplier"] = product
        live["compute_multiplier_factors"] = {
            **live["compute_multiplier_factors"],
            **{name: float(value) for name, value in factors.items()},
        }
    return live


def with_live_boosts(chute: registry_pb2.Chute, light: Mapping[str, Any]) -> registry_pb2.Chute:
    """A cached response with what changes without a write to the chute (spec 8.3): the live
    bounty's amount and boost, and the manual boost, multiplied in. The cached message is
    shared, so a changed one is a copy."""
    if not shows_live(light):
        return chute
    age = light["bounty_age"]
    factors = live_factors(light["manual_boost"], age)
    live = registry_pb2.Chute()
    live.CopyFrom(chute)
    if age is not None:
        live.bounty = bounties.amount(age)
    if live.HasField("effective_compute_multiplier"):
        for value in factors.values():
            live.effective_compute_multiplier *= value
        live.compute_multiplier_factors.update(factors)
    return live


def rolling_update_message(row: Mapping[str, Any]) -> registry_pb2.RollingUpdate:
    return registry_pb2.RollingUpdate(
        chute_id=row["chute_id"],
        old_version=row["old_version"],
        new_version=row["new_version"],
        started_at=timestamp(row["started_at"]),
        permitted=loads(row["permitted"]),
    )


def bounty_message(row: Mapping[str, Any]) -> registry_pb2.Bounty:
    return registry_pb2.Bounty(
        chute_id=row["chute_id"],
        bounty_amount=bounties.amount(row["age"]),
        seconds_elapsed=int(row["age"]),
        time_remaining=max(int(row["remaining"]), 0),
        created_at=row["created_at"],
    )


def boosted_message(row: Mapping[str, Any]) -> registry_pb2.BoostedChute:
    return registry_pb2.BoostedChute(
        chute_id=row["chute_id"], name=row["name"], boost=row["boost"], manual_boost=row["manual_boost"]
    )


def affine_message(row: Mapping[str, Any], hotkey: str) -> registry_pb2.AffineChute:
    return registry_pb2.AffineChute(
        chute_id=row["chute_id"],
        user_id=row["user_id"],
        name=row["name"],
        hotkey=hotkey,
        has_active_instance=row["has_active_instance"],
    )


def public_copy_message(entry: Mapping[str, Any]) -> registry_pb2.PublicChuteCopy:
    return registry_pb2.PublicChuteCopy(
        chute_id=entry["chute_id"],
        source_chute_id=entry["source_chute_id"],
        name=entry["name"],
        slug=entry["slug"],
        version=entry["version"],
        created_at=timestamp(entry["created_at"]),
        updated_at=timestamp(entry["updated_at"]),
        status=entry["status"],
    )
