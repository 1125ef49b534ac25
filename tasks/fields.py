"""The fields a task's rows must hold and their kinds (text, a number, a list of texts), in words a user reads.

A row of a local JSON-lines file may hold anything: a field of another kind (null, a list where text is expected)
would reach the model as its Python form (the text "None"), so `row_problem` finds it before any prompt is made.
"""
from __future__ import annotations

import types
import typing
from typing import Any

JSON_KINDS = {str: "text", int: "a number", float: "a number", bool: "true or false", type(None): "null",
              list: "a list", dict: "an object"}


def conforms(value: Any, kind: Any) -> bool:
    """Whether `value`, read from JSON, is of `kind`: a type, a union (`int | str`) or a list of one (`list[str]`)."""
    if isinstance(kind, types.UnionType):
        return any(conforms(value, member) for member in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return isinstance(value, list) and all(conforms(item, typing.get_args(kind)[0]) for item in value)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def kind_name(kind: Any) -> str:
    """`str` → "text", `int | str` → "a number or text", `list[str]` → "a list of texts"."""
    if isinstance(kind, types.UnionType):
        return " or ".join(kind_name(member) for member in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return f"a list of {kind_name(typing.get_args(kind)[0]).removeprefix('a ')}s"
    return JSON_KINDS[kind]


def held(value: Any, kind: Any) -> str:
    """What a value that does not conform holds, in words (a list of texts: its first item of another kind)."""
    if isinstance(value, list) and typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        return f"a list holding {held(next(v for v in value if not conforms(v, item)), item)}"
    return JSON_KINDS.get(type(value), type(value).__name__)


def row_problem(row: dict[str, Any], fields: dict[str, Any]) -> str | None:
    """What is wrong with a row (a field missing, or of another kind), or None."""
    for name, kind in fields.items():
        if name not in row:
            return f"no field {name!r}"
        if not conforms(row[name], kind):
            return f"field {name!r} holds {held(row[name], kind)}, not {kind_name(kind)}"
    return None
