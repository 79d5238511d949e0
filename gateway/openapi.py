"""The REST face as an OpenAPI 3.1 document, generated from the same descriptor set the gateway
transcodes with (gateway/render.py serves it at `/openapi.json`, with a docs page at `/docs`).

What it says follows what the transcoder and the Lua normaliser do, so a client or a fuzzer can
trust it:
- one operation per `google.api.http` rule of every routed service (`*InternalService`s have
  none); `{name=**}` path variables are plain `{name}` parameters;
- path variables are path parameters; on bodiless rules and rules whose body is one field, the
  other top-level scalar (and repeated scalar) fields are query parameters; the body is that
  field's message, or the whole request without its path variables (`body: "*"`);
- bodies and answers use the proto3 JSON mapping with proto field names (the transcoder's print
  options): 64-bit integers may be strings, Timestamps RFC 3339 strings, Structs objects;
- an RPC answering `repeated X items = 1` answers a bare JSON array (Lua unwraps it),
  `google.api.HttpBody` answers raw bytes of any type, server streams answer Server-Sent Events;
- every error is `{"detail": ...}`: a string, or FastAPI's list of validation errors (422).
"""

from __future__ import annotations

import re
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

FieldDescriptor = descriptor_pb2.FieldDescriptorProto

#: Services named `*InternalService` are for the suite's own services: never routed, never
#: documented (gateway/render.py reads the same name).
INTERNAL_SUFFIX = "InternalService"

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    # proto3 JSON prints 64-bit integers as strings and accepts both.
    FieldDescriptor.TYPE_INT64: {"type": ["integer", "string"]},
    FieldDescriptor.TYPE_UINT64: {"type": ["integer", "string"]},
    FieldDescriptor.TYPE_SINT64: {"type": ["integer", "string"]},
    FieldDescriptor.TYPE_FIXED64: {"type": ["integer", "string"]},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["integer", "string"]},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
#: Well-known types, by their JSON mapping.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array"},
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {"type": "object"},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.StringValue": {"type": ["string", "null"]},
    ".google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    ".google.protobuf.Int32Value": {"type": ["integer", "null"]},
    ".google.protobuf.UInt32Value": {"type": ["integer", "null"]},
    ".google.protobuf.Int64Value": {"type": ["integer", "string", "null"]},
    ".google.protobuf.UInt64Value": {"type": ["integer", "string", "null"]},
    ".google.protobuf.DoubleValue": {"type": ["number", "null"]},
    ".google.protobuf.FloatValue": {"type": ["number", "null"]},
    ".google.protobuf.BytesValue": {"type": ["string", "null"]},
}
_HTTP_BODY = ".google.api.HttpBody"
_PATH_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")

#: `{"detail": ...}`: every error the gateway answers, FastAPI-shaped.
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ValidationError": {
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string"},
            "type": {"type": "string"},
            "input": {},
            "ctx": {"type": "object"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                ]
            }
        },
    },
}


class _Schemas:
    """Message schemas by full name, built as operations refer to them."""

    def __init__(self, descriptors: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        for file in descriptors.file:
            prefix = f".{file.package}" if file.package else ""
            for message in file.message_type:
                self._add(prefix, message)
            for enum in file.enum_type:
                self.enums[f"{prefix}.{enum.name}"] = enum
        self.built: dict[str, dict[str, Any]] = dict(ERROR_SCHEMAS)

    def _add(self, prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        for nested in message.nested_type:
            self._add(name, nested)
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = enum

    @staticmethod
    def component(type_name: str) -> str:
        """`.chutes.registry.v1.Chute` as `registry.Chute`: short, and unique per package."""
        parts = type_name.lstrip(".").split(".")
        if parts[0] == "chutes" and len(parts) > 3:
            return ".".join([parts[1], *parts[3:]])
        return ".".join(parts)

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        name = self.component(type_name)
        if name not in self.built:
            self.built[name] = {}  # placeholder: recursive messages refer to themselves
            self.built[name] = self.message(self.messages[type_name])
        return {"$ref": f"#/components/schemas/{name}"}

    def message(
        self, message: descriptor_pb2.DescriptorProto, skip: set[str] | None = None
    ) -> dict[str, Any]:
        properties = {f.name: self.field(f) for f in message.field if f.name not in (skip or set())}
        return {"type": "object", "properties": properties}

    def field(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = self.messages.get(field.type_name)
            if entry is not None and entry.options.map_entry:
                return {"type": "object", "additionalProperties": self.field(entry.field[1])}
            single = self.ref(field.type_name)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            enum = self.enums[field.type_name]
            single = {
                "anyOf": [{"type": "string", "enum": [v.name for v in enum.value]}, {"type": "integer"}]
            }
        else:
            single = dict(_SCALARS[field.type])
        if field.label == FieldDescriptor.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single


def _parameter(
    field: descriptor_pb2.FieldDescriptorProto, where: str, schemas: _Schemas, name: str = ""
) -> dict[str, Any]:
    return {
        "name": name or field.name,
        "in": where,
        "required": where == "path",
        "schema": schemas.field(field),
    }


def _is_query_field(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Fields the transcoder reads from a query string: scalars, enums and lists of them."""
    return field.type != FieldDescriptor.TYPE_MESSAGE


def _json_twin(
    service: descriptor_pb2.ServiceDescriptorProto, method: descriptor_pb2.MethodDescriptorProto
) -> str | None:
    """The message an HttpBody RPC `<Name>Json` answers as JSON: its typed twin `<Name>`'s
    (the registry pre-renders the twin's answer for REST, issue 14); None for any other RPC."""
    if method.output_type != _HTTP_BODY or not method.name.endswith("Json"):
        return None
    twins = [m.output_type for m in service.method if m.name == method.name.removesuffix("Json")]
    return twins[0] if twins else None


def _operation(
    method: descriptor_pb2.MethodDescriptorProto,
    rule: Any,
    schemas: _Schemas,
    service: str,
    placeholders: dict[str, str],
    json_of: str | None = None,
) -> dict[str, Any]:
    """`placeholders`: the path's name for each path variable (see `document`); `json_of`: the
    message an HttpBody answer prints (see `_json_twin`)."""
    request = schemas.messages[method.input_type]
    verb = rule.WhichOneof("pattern")
    template: str = getattr(rule, verb)
    bound = {m.group(1).split(".")[0] for m in _PATH_VARIABLE.finditer(template)}
    fields = {f.name: f for f in request.field}
    parameters = [
        _parameter(fields[name], "path", schemas, placeholders.get(name, name))
        for name in sorted(bound)
        if name in fields
    ]
    operation: dict[str, Any] = {"operationId": method.name, "tags": [service]}
    if rule.body == "*":
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.message(request, skip=bound)}},
        }
    else:
        if rule.body:
            body = fields[rule.body]
            if body.type_name == _HTTP_BODY:
                content: dict[str, Any] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
            else:
                content = {"application/json": {"schema": schemas.field(body)}}
            operation["requestBody"] = {"required": True, "content": content}
        parameters += [
            _parameter(f, "query", schemas)
            for f in request.field
            if f.name not in bound and f.name != rule.body and _is_query_field(f)
        ]
    if parameters:
        operation["parameters"] = parameters
    output = json_of or method.output_type
    if output == _HTTP_BODY:
        answer: dict[str, Any] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    elif method.server_streaming:
        answer = {"text/event-stream": {"schema": {"type": "string"}}}
    else:
        reply = schemas.messages[output]
        items = [f for f in reply.field if f.name == "items" and f.label == FieldDescriptor.LABEL_REPEATED]
        schema = schemas.field(items[0]) if len(reply.field) == 1 and items else schemas.ref(output)
        answer = {"application/json": {"schema": schema}}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    operation["responses"] = {
        "200": {"description": "Success", "content": answer},
        "422": {"description": "Validation error", "content": error},
        "4XX": {"description": "The request cannot be served as it is", "content": error},
        "5XX": {"description": "A service is unavailable (503) or not built yet (501)", "content": error},
    }
    return operation


def openapi_path(template: str) -> str:
    """`/chutes/{chute_id_or_name=**}` as `/chutes/{chute_id_or_name}`."""
    return _PATH_VARIABLE.sub(lambda m: "{" + m.group(1) + "}", template)


def document(descriptors: descriptor_pb2.FileDescriptorSet, version: str = "0") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every REST route the gateway serves."""
    schemas = _Schemas(descriptors)
    paths: dict[str, dict[str, Any]] = {}
    # OpenAPI forbids two templates that differ only in their variables' names
    # (`/chutes/{chute_id}`, `/chutes/{chute_id_or_name}`): the first one seen names them all.
    by_shape: dict[str, str] = {}
    for file in descriptors.file:
        package = file.package.split(".")
        if len(package) != 3 or package[0] != "chutes":
            continue
        for service in file.service:
            if service.name.endswith(INTERNAL_SUFFIX):
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    verb = binding.WhichOneof("pattern")
                    if verb in (None, "custom"):
                        continue
                    path = openapi_path(getattr(binding, verb))
                    path = by_shape.setdefault(_PATH_VARIABLE.sub("{}", path), path)
                    names = [m.group(1) for m in _PATH_VARIABLE.finditer(getattr(binding, verb))]
                    placeholders = dict(
                        zip(names, (m.group(1) for m in _PATH_VARIABLE.finditer(path)), strict=True)
                    )
                    paths.setdefault(path, {})[verb] = _operation(
                        method, binding, schemas, package[1], placeholders, _json_twin(service, method)
                    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Chutes API (chutes-suite)",
            "version": version,
            "description": "The REST face of the suite's services, generated from their protos.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.built.items()))},
    }


#: The docs page: Swagger UI (from a CDN, as FastAPI's /docs) reading /openapi.json.
DOCS_HTML = """<!doctype html>
<html>
<head>
<title>Chutes API (chutes-suite)</title>
<meta charset="utf-8">
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body>
</html>
"""
