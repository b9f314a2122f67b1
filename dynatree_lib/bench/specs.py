"""Method specs on the command line and in stored rows: "AR,HFAssisted,Linear(K=4..8),FixedTree(D=5,B=2)".

`label(method)` output parses back to the same method."""
from __future__ import annotations

import ast
import dataclasses
import re
import warnings

# label() abbreviations back to field names; CLASS_ALIASES first, for the classes whose labels use them otherwise.
ALIASES = {"K": "k", "D": "depth", "B": "branch", "tau": "threshold", "N": "max_nodes"}
CLASS_ALIASES = {
    "TopNTree": {"N": "max_nodes", "D": "max_depth", "k": "topk"},
    "PromptLookup": {"n": "max_ngram", "K": "k", "b": "branches"},
    "HFPromptLookup": {"K": "k", "n": "max_ngram"},
    "HFAssisted": {"K": "num_assistant_tokens"},
    "Streaming": {"cache": "cache_size", "sinks": "sink_tokens"},
}


def _method_classes() -> dict:
    import dynatree_lib

    classes = {}
    for obj in vars(dynatree_lib).values():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and callable(getattr(obj, "label", None)):
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
        special = _from_label(item, classes)
        if special is not None:
            methods.append(special)
            continue
        match = re.fullmatch(r"([A-Za-z_]\w*)\s*(?:\((.*)\))?", item, flags=re.S)
        if not match or match.group(1) not in classes:
            raise ValueError(f"unknown method {item!r}; known: {', '.join(sorted(classes))}")
        cls = classes[match.group(1)]
        names = [f.name for f in dataclasses.fields(cls)]
        fields = set(names)
        aliases = {**ALIASES, **CLASS_ALIASES.get(cls.__name__, {})}
        renamed = getattr(cls, "renamed_parameters", {})
        options = {}
        for i, arg in enumerate(_split_top(match.group(2) or "")):
            if "=" not in arg or (i == 0 and names[0] == "method" and re.match(r"[A-Za-z_][\w-]*\s*\(", arg)):
                if i == 0 and names[0] == "method":  # Streaming(Linear(K=4),cache=...): the wrapped method first
                    options["method"] = [parse_method(arg)]
                    continue
                raise ValueError(f"{item!r}: arguments must be key=value, got {arg!r}")
            k, v = (s.strip() for s in arg.split("=", 1))
            if k in renamed:
                warnings.warn(f"{cls.__name__}({k}=...) is deprecated, use {renamed[k]}=", DeprecationWarning,
                              stacklevel=2)
                k = renamed[k]
            k = k if k in fields else aliases.get(k, k)
            if k not in fields:
                raise ValueError(f"{item!r}: {cls.__name__} has no parameter {k!r}; parameters: {sorted(fields)}")
            value, many = _value(v)
            options[k] = value if many else [value]
        for combo in itertools.product(*options.values()):
            methods.append(cls(**dict(zip(options, combo))))
    return methods


def _from_label(item: str, classes: dict):
    """The labels that are not Class(key=value,...): DynaTree-P<phase>(...) and Hybrid(<tree>+PL(...)). None for
    any other item."""
    match = re.fullmatch(r"DynaTree-P(\d+)\((.*)\)", item, flags=re.S)
    if match:
        return _dynatree(classes["DynaTree"], int(match.group(1)), match.group(2), item)
    match = re.fullmatch(r"Hybrid\((.*)\+PL\((.*)\)\)", item, flags=re.S)
    if match:
        options = {}
        for arg in _split_top(match.group(2)):
            k, _, v = (s.strip() for s in arg.partition("="))
            if k not in CLASS_ALIASES["PromptLookup"]:
                raise ValueError(f"{item!r}: unknown PL setting {arg!r} (n=, K=, b=)")
            options[CLASS_ALIASES["PromptLookup"][k]] = ast.literal_eval(v)
        return classes["HybridTree"](tree=parse_method(match.group(1)), **options)
    return None


def _dynatree(cls, phase: int, args: str, item: str):
    """DynaTree-P3(D=5..8,B=1/2/3,conf=0.9/0.4[,noprune][,nobudget][,field=value...]); phase 1 shows D=<base_depth>,
    phase 4 D<=<max_depth>."""
    options = {"phase": phase}
    try:
        for arg in _split_top(args):
            if arg in ("noprune", "nobudget"):
                options["pruning" if arg == "noprune" else "node_budget"] = False
            elif arg.startswith("D<="):
                options["max_depth"] = int(arg[3:])
            elif arg.startswith("D="):
                depth = arg[2:].split("..")
                options["base_depth"] = int(depth[0])
                if len(depth) == 2:
                    options["max_depth"] = int(depth[1])
            elif arg.startswith("B="):
                options["min_branch"], options["default_branch"], options["max_branch"] = map(int, arg[2:].split("/"))
            elif arg.startswith("conf="):
                options["high_conf"], options["low_conf"] = map(float, arg[5:].split("/"))
            else:
                k, v = (s.strip() for s in arg.split("=", 1))
                options[k] = ast.literal_eval(v)
        return cls(**options)
    except (ValueError, TypeError, SyntaxError) as error:
        raise ValueError(f"{item!r} is not a DynaTree label: {error}") from error


def parse_method(spec: str):
    """Exactly one method from a spec such as "FixedTree(D=8, B=3, tau=0.03)" or "AR"."""
    methods = parse_methods(spec)
    if len(methods) != 1:
        raise ValueError(f"{spec!r} names {len(methods)} methods; expected one")
    return methods[0]
