"""Walk a composed YAML node tree, collecting `file:line: field: message` problems.

PyYAML's plain loaders return dicts without line numbers and silently keep the last of two
duplicate keys. Policy errors must name the line and catch duplicates, so the loader works on
nodes; NodeReader keeps the problem list and the typed accessors every part of it uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import yaml

from egress.errors import PolicyError

__all__ = ["COMPOSER", "NodeReader", "construct", "find"]

T = TypeVar("T")

_STR_TAG = "tag:yaml.org,2002:str"
# libyaml's parser when PyYAML was built with it (3x faster on large policies), same nodes and
# line numbers; some YAML syntax error texts differ.
COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# One constructor per thread: reloads parse in a worker thread, and a constructor keeps state.
_LOCAL = threading.local()


class NodeReader:
    def __init__(self) -> None:
        self.errors: list[PolicyError] = []

    def error(self, file: str, node: yaml.Node | None, field: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.errors.append(PolicyError(file, line, field, message))

    def mapping(
        self, file: str, node: yaml.Node, field: str, allowed: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(file, node, field, "must be a mapping (key: value)")
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                self.error(file, key_node, field, "keys must be plain strings")
            elif key in out:
                first = out[key][0].start_mark.line + 1
                self.error(file, key_node, where, f"defined twice (first on line {first})")
            elif allowed is not None and key not in allowed:
                self.error(
                    file, key_node, where, f"unknown key; expected one of: {', '.join(allowed)}"
                )
            else:
                out[key] = (key_node, value_node)
        return out

    def scalar(
        self, file: str, node: yaml.Node, field: str, kind: type[T], what: str
    ) -> T | None:
        if isinstance(node, yaml.ScalarNode):
            try:
                value = construct(node)
            except (yaml.YAMLError, ValueError, TypeError):
                value = None  # e.g. `!!int abc` or an unknown `!tag`: reported below
            # bool is an int in Python, but `port: true` is a mistake, not port 1.
            if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
                return value
        self.error(file, node, field, f"must be {what}")
        return None

    def items(self, file: str, node: yaml.Node, field: str) -> Iterator[tuple[int, yaml.Node]]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(file, node, field, "must be a list")
            return
        yield from enumerate(node.value)

    def parsed(
        self, file: str, node: yaml.Node, field: str, parse: Callable[[str], T]
    ) -> T | None:
        text = self.scalar(file, node, field, str, "a string")
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            self.error(file, node, field, str(exc))
            return None

    def parsed_unit(self, file: str, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str,
                    parse: Callable[[Any], float], what: str, where: str) -> float | None:
        """A size or duration written as a number or a string with a unit ("100MB", "7d")."""
        if key not in fields:
            return None
        node = fields[key][1]
        try:
            raw = construct(node) if isinstance(node, yaml.ScalarNode) else None
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise ValueError(f"must be {what}")
            return parse(raw)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            self.error(file, node, f"{where}.{key}", str(exc))
            return None


def construct(node: yaml.Node) -> Any:
    # Most scalars are plain strings: skip the constructor machinery for them (this is most of
    # the load time of a 100,000-rule policy).
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        return node.value
    constructor = getattr(_LOCAL, "constructor", None)
    if constructor is None:
        constructor = _LOCAL.constructor = yaml.constructor.SafeConstructor()
    try:
        return constructor.construct_object(node, deep=True)
    finally:
        constructor.constructed_objects.clear()  # no memory kept between calls


def find(node: yaml.Node, dotted: str) -> yaml.Node:
    """The node at a dotted path below `node` (best effort), for error line numbers."""
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == part:
                node = v
                break
        else:
            break
    return node
