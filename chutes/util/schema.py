"""JSON schemas of cord functions, derived from their type hints (spec `chutes-sdk.md` 2.2, 2.4).

The platform shows these schemas in its UI and docs and stores them with each cord, so they follow
the real SDK's shapes: references are `#/definitions/<Model>` (not pydantic's `$defs`), one shared
`definitions` dict per function (an output model therefore also appears in the input schema's
definitions), every annotated parameter is listed as required whatever its default, and a
pydantic return type is inlined as `{"type": "object", ...}`.

Two deliberate differences: a leading `self` is left out of the input schema even when annotated
(the real SDK skips it only because it is usually unannotated; typed chute code annotates it),
and `None`/`NoneType` maps to `{"type": "null"}` wherever it appears, so `Optional[float]` is
`{"oneOf": [{"type": "number"}, {"type": "null"}]}`. The real SDK misses `NoneType` in its
lookup and emits `{}` for the second branch, which says nothing useful.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, Literal, TypeGuard, Union

from pydantic import BaseModel

JsonSchema = dict[str, Any]

#: Where model definitions live in every schema this module produces.
REF_TEMPLATE: Final = "#/definitions/{model}"

_PRIMITIVES: Final[dict[Any, str]] = {str: "string", int: "integer", float: "number", bool: "boolean"}

# Origins (as `typing.get_origin` reports them) of the generic containers the rules cover.
_LIST_ORIGINS: Final = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_DICT_ORIGINS: Final = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SET_ORIGINS: Final = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)


def is_model_class(value: Any) -> TypeGuard[type[BaseModel]]:
    """True for a pydantic model class (not an instance)."""
    return isinstance(value, type) and issubclass(value, BaseModel)


def _model_definitions(model: type[BaseModel]) -> tuple[JsonSchema, JsonSchema]:
    """(the model's own schema without title/nested definitions, the nested definitions)."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    nested: JsonSchema = schema.pop("$defs", {})
    nested.update(schema.pop("definitions", {}))
    schema.pop("title", None)
    return schema, nested


def get_minimal_schema(model: type[BaseModel]) -> JsonSchema:
    """The wrapper form used for explicit `input_schema`/`minimal_input_schema` classes (spec 2.2):
    a single required `input_args` property referencing the model."""
    schema, nested = _model_definitions(model)
    definitions: JsonSchema = {model.__name__: schema, **nested}
    return {
        "type": "object",
        "properties": {"input_args": {"$ref": REF_TEMPLATE.format(model=model.__name__)}},
        "required": ["input_args"],
        "definitions": definitions,
    }


def _enum_schema(enum: type[Enum]) -> JsonSchema:
    values = [member.value for member in enum]
    kinds = {type(value) for value in values}
    if kinds == {str}:
        return {"type": "string", "enum": values}
    if kinds == {int}:
        return {"type": "integer", "enum": values}
    if kinds and kinds <= {int, float}:
        return {"type": "number", "enum": values}
    return {"enum": values}


def type_to_schema(hint: Any, definitions: JsonSchema) -> JsonSchema:
    """The JSON schema of one type hint; pydantic models are added to `definitions` and referenced."""
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint in _PRIMITIVES:
        return {"type": _PRIMITIVES[hint]}
    if hint is list:
        return {"type": "array", "items": {}}
    if hint is dict:
        return {"type": "object"}
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum_schema(hint)
    if is_model_class(hint):
        schema, nested = _model_definitions(hint)
        definitions.update(nested)
        definitions[hint.__name__] = schema
        return {"$ref": REF_TEMPLATE.format(model=hint.__name__)}

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return {"oneOf": [type_to_schema(arg, definitions) for arg in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in _LIST_ORIGINS:
        return {"type": "array", "items": type_to_schema(args[0], definitions) if args else {}}
    if origin in _SET_ORIGINS:
        items = type_to_schema(args[0], definitions) if args else {}
        return {"type": "array", "items": items, "uniqueItems": True}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            # tuple[int, ...] is a homogeneous array of any length.
            return {"type": "array", "items": type_to_schema(args[0], definitions)}
        return {
            "type": "array",
            "items": [type_to_schema(arg, definitions) for arg in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin in _DICT_ORIGINS:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": type_to_schema(args[1], definitions)}
        return {"type": "object"}
    # Anything else (Any, bytes, fastapi.Response, unresolved string annotations...) says nothing.
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
        schema: JsonSchema = value.model_json_schema(ref_template=REF_TEMPLATE)
        return schema
    if isinstance(value, dict):
        return value
    raise TypeError(f"a schema must be a pydantic model class or a dict, got {type(value).__name__}")


class SchemaExtractor:
    """The real SDK's entry points (`SchemaExtractor.extract_schemas(func)` etc.), for code that
    calls them directly."""

    get_minimal_schema = staticmethod(get_minimal_schema)
    extract_schemas = staticmethod(extract_schemas)
    extract_models = staticmethod(extract_models)
    type_to_schema = staticmethod(type_to_schema)
