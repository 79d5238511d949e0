"""JSON schemas of cord functions, derived from their type hints (spec `chutes-sdk.md` 2.2, 2.4).

The platform shows these schemas in its UI and docs and stores them with each cord, and a chute
deployed with our SDK must send the same bytes as with the published one (issue 15), so the
published SDK's mapping is followed exactly, quirks included:

- references are `#/definitions/<Model>`, one shared `definitions` dict per function (an output
  model therefore also appears in the input schema's definitions), every annotated parameter is
  required whatever its default, and a pydantic return type is inlined as `{"type": "object", ...}`;
- a model's nested models stay where pydantic puts them, under `$defs` inside the model's own
  definition (referenced as `#/definitions/<Nested>` all the same); an explicit
  `output_schema=Model` is pydantic's plain schema (`#/$defs/...` references);
- `None` alone is `{"type": "null"}`, but `NoneType` (what `-> None` and the `None` of
  `Optional[X]` become) maps to `{}`: `Optional[float]` is `{"oneOf": [{"type": "number"}, {}]}`
  and `-> None` gives output schema `{}` and content type text/plain;
- only `typing.Union` is a union: `X | None` maps to `{}`; only list, dict, set and tuple
  generics are containers: `Sequence[str]`, `Mapping[...]`, `frozenset[...]` map to `{}`;
  `tuple[int, ...]` is a two-item array whose second item is `{}`.

One deliberate difference: a leading `self` is left out of the input schema even when annotated
(the published SDK skips it only because it is usually unannotated; typed chute code, our
templates included, annotates it).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, Literal, TypeGuard, Union

from pydantic import BaseModel

JsonSchema = dict[str, Any]

#: Where model definitions are referenced in the schemas derived from type hints.
REF_TEMPLATE: Final = "#/definitions/{model}"

#: Plain types and their schemas (the published SDK's table; `None`, not `NoneType`).
PYTHON_TYPE_TO_JSON_TYPE: Final[dict[Any, JsonSchema]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    list: {"type": "array", "items": {}},
    dict: {"type": "object"},
    None: {"type": "null"},
}


def is_model_class(value: Any) -> TypeGuard[type[BaseModel]]:
    """True for a pydantic model class (not an instance)."""
    return isinstance(value, type) and issubclass(value, BaseModel)


def _definition(model: type[BaseModel]) -> JsonSchema:
    """The model's schema as a definition: without its title (nested `$defs` stay inside)."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    return {key: value for key, value in schema.items() if key not in ("title", "definitions")}


def get_minimal_schema(model: type[BaseModel]) -> JsonSchema:
    """The wrapper form used for explicit `input_schema`/`minimal_input_schema` classes (spec 2.2):
    a single required `input_args` property referencing the model."""
    if not is_model_class(model):
        raise ValueError("minimal_input_schema must be a Pydantic model")
    return {
        "type": "object",
        "properties": {"input_args": {"$ref": REF_TEMPLATE.format(model=model.__name__)}},
        "required": ["input_args"],
        "definitions": {model.__name__: _definition(model)},
    }


def _enum_schema(enum: type[Enum]) -> JsonSchema:
    values = [member.value for member in enum]
    for kind, name in ((str, "string"), (int, "integer"), (float, "number")):
        if all(isinstance(value, kind) for value in values):
            return {"type": name, "enum": values}
    return {"enum": values}


def _lookup(hint: Any) -> JsonSchema | None:
    try:
        schema = PYTHON_TYPE_TO_JSON_TYPE.get(hint)
    except TypeError:  # an unhashable annotation
        return None
    return dict(schema) if schema is not None else None


def type_to_schema(hint: Any, definitions: JsonSchema) -> JsonSchema:
    """The JSON schema of one type hint; pydantic models are added to `definitions` (the first
    definition of a name wins) and referenced."""
    if hint is None:
        return {"type": "null"}
    if inspect.isclass(hint) and issubclass(hint, Enum):
        return _enum_schema(hint)
    if is_model_class(hint):
        definitions.setdefault(hint.__name__, _definition(hint))
        return {"$ref": REF_TEMPLATE.format(model=hint.__name__)}
    plain = _lookup(hint)
    if plain is not None:
        return plain

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union:
        schemas = [type_to_schema(arg, definitions) for arg in args]
        # The published SDK's nullable shortcut; it only fires for a literal None member, which
        # typing turns into NoneType, so in practice unions stay oneOf.
        if len(schemas) == 2 and {"type": "null"} in schemas:
            other = next(schema for schema in schemas if schema != {"type": "null"})
            return {**other, "nullable": True}
        return {"oneOf": schemas}
    if origin is list:
        return {"type": "array", "items": type_to_schema(args[0] if args else Any, definitions)}
    if origin is dict:
        if not args:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": type_to_schema(args[1], definitions)}
    if origin is tuple:
        return {
            "type": "array",
            "items": [type_to_schema(arg, definitions) for arg in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin is set:
        items = type_to_schema(args[0] if args else Any, definitions)
        return {"type": "array", "items": items, "uniqueItems": True}
    if origin is Literal:
        return {"enum": list(args)}
    # Anything else (Any, NoneType, bytes, fastapi.Response, X | None, Sequence[...],
    # unresolved string annotations...) says nothing.
    return {}


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations; unresolvable ones (e.g. names local to a function under postponed
    evaluation) fall back to the raw annotation, which maps to `{}`."""
    try:
        return typing.get_type_hints(func)
    except Exception:
        return dict(getattr(func, "__annotations__", {}))


def extract_schemas(func: Callable[..., Any]) -> tuple[JsonSchema, JsonSchema | None]:
    """(input schema, output schema or None when there is no return annotation) of a cord function."""
    hints = _type_hints(func)
    definitions: JsonSchema = {}
    properties: JsonSchema = {}
    for index, name in enumerate(inspect.signature(func).parameters):
        # The chute itself is never part of a request, even when `self` is annotated.
        if name in hints and not (index == 0 and name == "self"):
            properties[name] = type_to_schema(hints[name], definitions)
    output: JsonSchema | None = None
    if "return" in hints:
        output = type_to_schema(hints["return"], definitions)
        ref = output.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            output = {"type": "object", **definitions[ref.removeprefix("#/definitions/")]}
    input_schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "definitions": definitions,
    }
    return input_schema, output


def extract_models(func: Callable[..., Any]) -> list[type[BaseModel]] | None:
    """The pydantic classes a request body is converted to: the function's parameters (after `self`)
    when every one is annotated with a model, else None (an empty list when there are none)."""
    hints = _type_hints(func)
    params = list(inspect.signature(func).parameters.values())
    if params and (params[0].name == "self" or params[0].name not in hints):
        params = params[1:]
    models: list[type[BaseModel]] = []
    for param in params:
        hint = hints.get(param.name)
        if not is_model_class(hint):
            return None
        models.append(hint)
    return models


def schema_of(value: Any, *, minimal: bool) -> JsonSchema | None:
    """An explicit cord schema argument: a model class (wrapper form when `minimal`, else the
    model's plain schema), a dict as given, or None. Anything else is a TypeError."""
    if value is None:
        return None
    if is_model_class(value):
        if minimal:
            return get_minimal_schema(value)
        # pydantic's own form (`$defs`, `#/$defs/...`), as the published SDK sends it.
        schema: JsonSchema = value.model_json_schema()
        return schema
    if isinstance(value, dict):
        return value
    raise TypeError(f"a schema must be a pydantic model class or a dict, got {type(value).__name__}")


class SchemaExtractor:
    """The published SDK's entry points (`SchemaExtractor.extract_schemas(func)`,
    `SchemaExtractor._get_schema_for_type(hint, definitions)`, its type table), for code that
    calls them directly."""

    PYTHON_TYPE_TO_JSON_TYPE = PYTHON_TYPE_TO_JSON_TYPE
    get_minimal_schema = staticmethod(get_minimal_schema)
    extract_schemas = staticmethod(extract_schemas)
    extract_models = staticmethod(extract_models)
    type_to_schema = staticmethod(type_to_schema)
    _get_schema_for_type = staticmethod(type_to_schema)
