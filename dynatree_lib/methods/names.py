"""A method's identity, its full configuration and its display name, all computed from its type and fields.

    identity(m)       ("DynaTree", '{"base_depth": 5, ...}'): what keys a stored row (type + every parameter)
    describe(m)       "DynaTree(draft_bits=4)": constructor syntax, non-default parameters only; it reads back
                      with bench.parse_method and is what `label(m)` and the `method` column of stored rows hold
    display_name(m)   "DynaTree · int4 draft": what a reader sees in a table or a legend
    display_names(ms) the same for one table, the differing parameters appended where two names would collide

A new method class needs one entry in NAMES (its short name); a class without one is shown by its class name.
"""
from __future__ import annotations

import dataclasses
import functools
import json

ALIASES = {"AR": "Autoregressive"}  # bare names a person may type for a class

# Per class: the short name a reader can say aloud, formatted with the method's fields (nested methods by their
# own display name). Settings every method may carry (the draft's weights, its vocabulary) are appended by SUFFIXES.
NAMES = {
    "Autoregressive": "Plain decoding",
    "HFGenerate": "transformers generate",
    "HFAssisted": "transformers assisted",
    "HFPromptLookup": "transformers prompt lookup",
    "Linear": "Chain of {k}",
    "FixedTree": "Fixed tree",
    "DynaTree": "DynaTree",
    "AdaptiveTree": "Adaptive tree",
    "TopNTree": "Top-{max_nodes} tree",
    "PromptLookup": "Prompt lookup",
    "HybridTree": "{tree} + prompt lookup",
    "HardwareAware": "Hardware-aware DynaTree",
    "PlannedTree": "Planned tree",
    "Streaming": "{method} · {cache_size}-token window",
}
SUFFIXES = {
    "draft_bits": "int{} draft".format,
    "draft_vocab": "{:,}-token draft vocab".format,
    "staged": lambda on: "staged" if on else "unstaged",
    "draft_context": "draft reads {} prompt tokens".format,
}
# Per class: fields whose default changed, with the value rows stored without them were measured with.
STORED_DEFAULTS = {"DynaTree": {"staged": False}}


@functools.cache
def method_classes() -> dict[str, type]:
    """The method classes dynatree_lib exports, by class name: the frozen dataclasses of dynatree_lib.methods."""
    import dynatree_lib

    return {name: obj for name in dynatree_lib.__all__ if isinstance(obj := getattr(dynatree_lib, name), type)
            and dataclasses.is_dataclass(obj) and obj.__dataclass_params__.frozen
            and obj.__module__.startswith(__package__)}


def is_method(value) -> bool:
    """A method object: methods are frozen dataclasses, pure configuration."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type) and value.__dataclass_params__.frozen


def _fields(method) -> dict:
    return {f.name: getattr(method, f.name) for f in dataclasses.fields(method) if f.init}


def record(method) -> dict:
    """Every parameter of `method` as JSON-ready values; a nested method as {"method_type", "method_params"}."""
    def value(v):
        if is_method(v):
            return {"method_type": type(v).__name__, "method_params": record(v)}
        return list(v) if isinstance(v, tuple) else v
    return {name: value(v) for name, v in _fields(method).items()}


def identity(method) -> tuple[str, str]:
    """(type name, parameters as sorted JSON): the method's part of a stored row's key."""
    return type(method).__name__, json.dumps(record(method), sort_keys=True)


def from_record(method_type: str, params: dict):
    """The method a stored (method_type, method_params) describes. Parameters a class no longer has under that name
    go through the class's own deprecation path; a nested method stored without its type (rows written before
    types were recorded) is the one class whose parameters cover the stored ones."""
    classes = method_classes()
    cls = classes.get(ALIASES.get(method_type, method_type))
    if cls is None:
        raise ValueError(f"unknown method type {method_type!r}; known: {', '.join(sorted(classes))}")

    def value(v):
        if isinstance(v, dict) and "method_type" in v:
            return from_record(v["method_type"], v.get("method_params", {}))
        if isinstance(v, dict):
            return from_record(_untyped(v, classes), v)
        return tuple(v) if isinstance(v, list) else v
    params = {**STORED_DEFAULTS.get(cls.__name__, {}), **params}
    return cls(**{k: value(v) for k, v in params.items()})


def _untyped(params: dict, classes: dict) -> str:
    """The class of a nested method stored as its parameters alone: the smallest class that has them all; none
    at all is Autoregressive (the one parameterless method that a wrapper such as Streaming can hold)."""
    if not params:
        return "Autoregressive"
    fits = [name for name, cls in classes.items() if set(params) <= valid_fields(cls)]
    fits.sort(key=lambda name: len(valid_fields(classes[name])))
    if not fits or (len(fits) > 1 and len(valid_fields(classes[fits[0]])) == len(valid_fields(classes[fits[1]]))):
        raise ValueError(f"cannot tell which method the stored parameters {params} describe (candidates: {fits})")
    return fits[0]


def valid_fields(cls) -> set[str]:
    """The keyword arguments `cls` accepts: its fields and its deprecated names for them."""
    return {f.name for f in dataclasses.fields(cls) if f.init} | set(getattr(cls, "renamed_parameters", {}))


@functools.lru_cache(maxsize=4096)
def non_default(method) -> dict:
    """The fields `method` needs spelled out: each one whose removal would construct a different method (so a
    default that the constructor derives from other fields, such as DynaTree's max_depth, is left out)."""
    cls, given = type(method), _fields(method)
    for name in list(given):
        rest = {k: v for k, v in given.items() if k != name}
        try:
            same = cls(**rest) == method
        except (TypeError, ValueError):  # a required field, or one the others cannot do without
            same = False
        if same:
            given = rest
    return given


def describe(method) -> str:
    """Constructor syntax with the non-default parameters, e.g. "DynaTree(draft_bits=4)"; a method with none is
    its bare name ("AR" for Autoregressive). Reads back to `method` with bench.parse_method."""
    params = non_default(method)
    name = type(method).__name__
    if not params:
        return next((alias for alias, cls in ALIASES.items() if cls == name), name)
    args = ", ".join(f"{k}={describe(v) if is_method(v) else repr(v)}" for k, v in params.items())
    return f"{name}({args})"


def display_name(method) -> str:
    """A short name a reader can say aloud: the class's entry in NAMES (its class name without one), then the
    draft settings that differ from the class's defaults, e.g. "DynaTree · int4 draft", "Chain of 5 · int4 draft",
    "Plain decoding"."""
    fields = _fields(method)
    name = type(method).__name__
    shown = {k: display_name(v) if is_method(v) else v for k, v in fields.items()}
    text = NAMES.get(name, name).format(**shown)
    given = non_default(method)
    extra = [fmt(given[k]) for k, fmt in SUFFIXES.items() if k in given]
    return " · ".join([text, *extra])


def display_names(methods) -> list[str]:
    """`display_name` of each method, made unique within the list: where different methods would share a name,
    each gets the parameters in which they differ appended, e.g. "DynaTree (phase=1)". A parameter is shown where
    it is not the default, and on every member where the group sweeps it (two or more non-default values)."""
    methods = list(methods)
    names = [display_name(m) for m in methods]
    for name in set(names):
        group = [i for i, n in enumerate(names) if n == name]
        if len({methods[i] for i in group}) < 2:
            continue
        given = [non_default(methods[i]) for i in group]
        every = [_fields(methods[i]) for i in group]
        shown = [[] for _ in group]
        for k in dict.fromkeys(k for f in every for k in f):  # the classes' field order
            if len({repr(f.get(k)) for f in every}) < 2:
                continue
            swept = len({repr(p[k]) for p in given if k in p}) > 1
            for out, p, f in zip(shown, given, every):
                if swept or k in p:
                    out.append(f"{k}={_plain(f.get(k))}")
        for i, out in zip(group, shown):
            names[i] = f"{name} ({', '.join(out)})" if out else name
    # what still collides (nested differences, two classes of one name) is told apart by the full configuration
    return [n if sum(o == n for o in names) == 1 or len({m for m, o in zip(methods, names) if o == n}) == 1
            else f"{n} [{describe(m)}]" for m, n in zip(methods, names)]


def _plain(value) -> str:
    return describe(value) if is_method(value) else str(value)
