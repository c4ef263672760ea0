"""Holds boto3's parsed responses to the service model's shapes: required members
present, no members the shape lacks, types, enums, lengths and ranges."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

MODEL_PATH = (
    Path(__file__).resolve().parents[2] / "crates/api/sagemaker-2017-07-24-optimization.json"
)
MODEL = json.loads(MODEL_PATH.read_text())
SHAPES = MODEL["shapes"]


def output_shape(operation: str) -> str | None:
    out = MODEL["operations"][operation].get("output")
    return out["shape"] if out else None


def check_response(operation: str, response: dict) -> None:
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    shape = output_shape(operation)
    if shape is None:
        assert body == {}, f"{operation} has no output members, got {body}"
        return
    check(shape, body, operation)


def check(name: str, value, path: str) -> None:
    shape = SHAPES[name]
    kind = shape["type"]
    if kind == "structure":
        assert isinstance(value, dict), f"{path}: {name} must be an object, got {value!r}"
        members = shape.get("members", {})
        for req in shape.get("required", []):
            assert req in value, f"{path}: required member {req} of {name} is missing"
        for key, item in value.items():
            assert key in members, f"{path}: {name} has no member {key}"
            check(members[key]["shape"], item, f"{path}.{key}")
        if shape.get("union"):
            assert len(value) == 1, f"{path}: union {name} must set exactly one member"
    elif kind == "list":
        assert isinstance(value, list), f"{path}: {name} must be a list"
        _bounds(shape, len(value), path)
        for i, item in enumerate(value):
            check(shape["member"]["shape"], item, f"{path}[{i}]")
    elif kind == "map":
        assert isinstance(value, dict), f"{path}: {name} must be a map"
        _bounds(shape, len(value), path)
        for k, v in value.items():
            check(shape["key"]["shape"], k, f"{path} key")
            check(shape["value"]["shape"], v, f"{path}.{k}")
    elif kind == "string":
        assert isinstance(value, str), f"{path}: {name} must be a string, got {value!r}"
        if "enum" in shape:
            assert value in shape["enum"], f"{path}: {value!r} is not one of {name}'s values"
        _bounds(shape, len(value), path)
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: {name} must be an integer"
        _bounds(shape, value, path)
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: {name} must be a boolean"
    elif kind == "timestamp":
        assert isinstance(value, datetime.datetime), f"{path}: {name} must be a timestamp"
    elif kind in ("float", "double"):
        assert isinstance(value, (int, float)), f"{path}: {name} must be a number"
    else:
        raise AssertionError(f"{path}: shape type {kind} is not handled by this checker")


def _bounds(shape: dict, n: int, path: str) -> None:
    if "min" in shape:
        assert n >= shape["min"], f"{path}: {n} is below the minimum {shape['min']}"
    if "max" in shape:
        assert n <= shape["max"], f"{path}: {n} is above the maximum {shape['max']}"
