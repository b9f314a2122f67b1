"""Method specs on the command line and in stored rows: "AR,HFAssisted,Linear(K=4..8),FixedTree(D=5,B=2)".

`label(method)` output parses back to the same method."""
from __future__ import annotations

import ast
import dataclasses
import re

# label() abbreviations back to field names.
ALIASES = {"K": "k", "D": "depth", "B": "branch", "tau": "threshold", "N": "max_nodes"}


def _method_classes() -> dict:
    import dynatree_lib

    classes = {}
    for obj in vars(dynatree_lib).values():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and hasattr(obj, "name"):
            classes[obj.__name__] = obj
            classes.setdefault(obj.name, obj)
    return classes


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _value(text: str):
    text = text.strip()
    if re.fullmatch(r"-?\d+\.\.-?\d+", text):  # an inclusive integer range expands into several methods
        low, high = map(int, text.split(".."))
        return list(range(low, high + 1)), True
    try:
        return ast.literal_eval(text), False
    except (ValueError, SyntaxError):
        pass
    if re.fullmatch(r"[A-Za-z_]\w*\s*\(.*\)", text, flags=re.S):  # a nested method, e.g. Streaming(method=Linear(K=4))
        inner = parse_methods(text)
        if len(inner) == 1:
            return inner[0], False
    return text, False


def parse_methods(spec: str) -> list:
    """Methods from a comma-separated spec; `label()` output parses back to the same method. A value `a..b`
    expands to one method per integer, e.g. "Linear(K=4..8)" is five methods."""
    import itertools

    classes = _method_classes()
    methods = []
    for item in _split_top(spec):
        match = re.fullmatch(r"([A-Za-z_]\w*)\s*(?:\((.*)\))?", item, flags=re.S)
        if not match or match.group(1) not in classes:
            raise ValueError(f"unknown method {item!r}; known: {', '.join(sorted(classes))}")
        cls = classes[match.group(1)]
        fields = {f.name for f in dataclasses.fields(cls)}
        options = {}
        for arg in _split_top(match.group(2) or ""):
            if "=" not in arg:
                raise ValueError(f"{item!r}: arguments must be key=value, got {arg!r}")
            k, v = (s.strip() for s in arg.split("=", 1))
            k = k if k in fields else ALIASES.get(k, k)
            if k not in fields:
                raise ValueError(f"{item!r}: {cls.__name__} has no parameter {k!r}; parameters: {sorted(fields)}")
            value, many = _value(v)
            options[k] = value if many else [value]
        for combo in itertools.product(*options.values()):
            methods.append(cls(**dict(zip(options, combo))))
    return methods


def parse_method(spec: str):
    """Exactly one method from a spec such as "FixedTree(D=8, B=3, tau=0.03)" or "AR"."""
    methods = parse_methods(spec)
    if len(methods) != 1:
        raise ValueError(f"{spec!r} names {len(methods)} methods; expected one")
    return methods[0]
