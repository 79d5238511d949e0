"""Request validation of a deploy, as FastAPI does it on the real API's ChuteArgs: every problem at
once, as a 422 list of `{loc, msg, type}`. Each group of fields has its own check."""

from __future__ import annotations

import re
from typing import Any

import pydantic

from chutes.chute import NodeSelector
from chutes.registry.v1 import registry_pb2
from services.kit.errors import FieldViolation, ValidationFailed, out_of_range
from services.kit.messages import has_field

FILENAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*\.py$")
REF_PATTERN = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")
REVISION_PATTERN = re.compile(r"^[a-fA-F0-9]{40}$")
CORD_PATH_PATTERN = re.compile(r"^(/[a-z][a-z0-9_]*)+$", re.IGNORECASE)
PUBLIC_PATH_PATTERN = re.compile(r"^(/[a-z][a-z0-9_-]*)+$", re.IGNORECASE)
TEMPLATES = ("vllm", "diffusion", "tei", "embedding")
#: Longest text fields, in characters.
TEXT_LIMITS = (("tagline", 1024), ("readme", 16384), ("tool_description", 16384), ("code", 150_000))
#: The scaling knobs' ranges.
SCALING_RANGES = (
    ("max_instances", 1, 100),
    ("scaling_threshold", 0.0, 1.0),
    ("shutdown_after_seconds", 60, 604_800),
)

Problems = list[FieldViolation]


def validate(args: registry_pb2.ChuteArgs) -> NodeSelector:
    """The node selector of a valid request; raises ValidationFailed (422) listing every problem."""
    problems: Problems = []
    _required_fields(problems, args)
    _text_fields(problems, args)
    _options(problems, args)
    _cords(problems, args)
    _jobs(problems, args)
    selector = _node_selector(problems, args)
    if problems:
        raise ValidationFailed(problems)
    assert selector is not None
    return selector


def node_selector_of(args: registry_pb2.ChuteArgs) -> NodeSelector:
    """The selector as sent (0 for the counts means not given: proto3 cannot tell them apart)."""
    ns = args.node_selector
    values: dict[str, Any] = {
        "include": list(ns.include) or None,
        "exclude": list(ns.exclude) or None,
        "dynamic": ns.dynamic,
    }
    if ns.gpu_count:
        values["gpu_count"] = ns.gpu_count
    if ns.min_vram_gb_per_gpu:
        values["min_vram_gb_per_gpu"] = ns.min_vram_gb_per_gpu
    if ns.HasField("max_hourly_price_per_gpu"):
        values["max_hourly_price_per_gpu"] = ns.max_hourly_price_per_gpu
    return NodeSelector(**values)


def _missing(loc: tuple[str | int, ...]) -> FieldViolation:
    return FieldViolation(loc, "Field required", "missing")


def _length(problems: Problems, name: str, value: str, low: int, high: int) -> None:
    if len(value) < low:
        problems.append(
            FieldViolation(
                ("body", name), f"String should have at least {low} characters", "string_too_short"
            )
        )
    elif len(value) > high:
        problems.append(
            FieldViolation(("body", name), f"String should have at most {high} characters", "string_too_long")
        )


def _pattern(problems: Problems, loc: tuple[str | int, ...], value: str, pattern: re.Pattern[str]) -> None:
    if not pattern.match(value):
        problems.append(
            FieldViolation(loc, f"String should match pattern '{pattern.pattern}'", "string_pattern_mismatch")
        )


def _required_fields(problems: Problems, args: registry_pb2.ChuteArgs) -> None:
    for name in ("name", "image", "code", "filename", "ref_str"):
        if not getattr(args, name):
            problems.append(_missing(("body", name)))
    for name in ("public", "node_selector"):
        if not has_field(args, name):
            problems.append(_missing(("body", name)))


def _text_fields(problems: Problems, args: registry_pb2.ChuteArgs) -> None:
    if args.name:
        _length(problems, "name", args.name, 3, 128)
    for name, high in TEXT_LIMITS:
        _length(problems, name, getattr(args, name), 0, high)
    if args.filename:
        _pattern(problems, ("body", "filename"), args.filename, FILENAME_PATTERN)
    if args.ref_str:
        _pattern(problems, ("body", "ref_str"), args.ref_str, REF_PATTERN)


def _options(problems: Problems, args: registry_pb2.ChuteArgs) -> None:
    if args.HasField("standard_template") and args.standard_template not in TEMPLATES:
        problems.append(
            FieldViolation(
                ("body", "standard_template"),
                f"Input should be one of {', '.join(TEMPLATES)}",
                "literal_error",
            )
        )
    if args.HasField("concurrency") and args.concurrency > 256:
        problems.append(
            FieldViolation(
                ("body", "concurrency"), "Input should be less than or equal to 256", "less_than_equal"
            )
        )
    if args.HasField("revision"):
        _pattern(problems, ("body", "revision"), args.revision, REVISION_PATTERN)
    problems += out_of_range(
        *(
            (("body", name), getattr(args, name), low, high)
            for name, low, high in SCALING_RANGES
            if has_field(args, name)
        )
    )


def _cords(problems: Problems, args: registry_pb2.ChuteArgs) -> None:
    for i, cord in enumerate(args.cords):
        loc: tuple[str | int, ...] = ("body", "cords", i)
        _pattern(problems, (*loc, "path"), cord.path, CORD_PATH_PATTERN)
        if not cord.function:
            problems.append(_missing((*loc, "function")))
        if cord.public_api_path:
            _pattern(problems, (*loc, "public_api_path"), cord.public_api_path, PUBLIC_PATH_PATTERN)
            if cord.public_api_method not in ("GET", "POST"):
                problems.append(
                    FieldViolation(
                        (*loc, "public_api_method"), "Input should be 'GET' or 'POST'", "literal_error"
                    )
                )


def _jobs(problems: Problems, args: registry_pb2.ChuteArgs) -> None:
    for i, job in enumerate(args.jobs):
        if not job.name:
            problems.append(_missing(("body", "jobs", i, "name")))
        if job.HasField("disk_gb"):
            problems += out_of_range((("body", "jobs", i, "disk_gb"), job.disk_gb, 10, 1000))
        for j, port in enumerate(job.ports):
            if port.port != 2202 and not 8002 <= port.port <= 65535:
                problems.append(
                    FieldViolation(
                        ("body", "jobs", i, "ports", j, "port"),
                        "Port must be 2202 or within 8002..65535",
                        "value_error",
                    )
                )


def _node_selector(problems: Problems, args: registry_pb2.ChuteArgs) -> NodeSelector | None:
    if not args.HasField("node_selector"):
        return None
    try:
        return node_selector_of(args)
    except pydantic.ValidationError as invalid:
        for error in invalid.errors():
            problems.append(
                FieldViolation(("body", "node_selector", *error["loc"]), error["msg"], error["type"])
            )
        return None
