"""Methods as a person types them (CLI --method, benchmark scripts' --methods, notebook parameters): the
constructor's own Python syntax, read with `ast`, never evaluated.

    "AR, Linear(k=4, draft_bits=4), Streaming(Linear(k=4), cache_size=512), DynaTree"

Names are the method classes dynatree_lib exports (and AR for Autoregressive); values are Python literals or
nested method calls. A list or a range() as a value sweeps it: "Linear(k=[4, 5, 6])" and "Linear(k=range(4, 7))"
are three methods each; one spec may name at most MAX_METHODS methods, counted before any is built.

Old keyword abbreviations ("Linear(K=5,draft_bits=4)", "FixedTree(D=5,B=2,tau=0.03,N=128)": OLD_KEYWORDS) still
read, with a DeprecationWarning: data/results/grid.csv stores its labels in that spelling alone.

Stored rows: `row_methods(table)` rebuilds each row's method from its `method_type` and `method_params`
(methods.method_from_row); `canonical(table)` rewrites a table's method columns in today's spelling.
"""
from __future__ import annotations

import ast
import functools
import itertools
import json
import math
import warnings

from ..methods.base import method_from_row, upgrade_kwargs
from ..methods.names import ALIASES, describe, identity, method_classes, valid_fields

MAX_METHODS = 1000

# The abbreviations of the former labels, per class: read (with a DeprecationWarning) where the class has no such
# field. Rows that stored a label without its method_type and method_params are rebuilt from it (stored_method).
OLD_KEYWORDS = {
    "Linear": {"K": "k"},
    "FixedTree": {"D": "depth", "B": "branch", "tau": "threshold", "N": "max_nodes"},
    "TopNTree": {"N": "max_nodes", "D": "max_depth", "k": "topk"},
    "PromptLookup": {"n": "max_ngram", "K": "k", "b": "branches"},
    "HybridTree": {"n": "max_ngram", "K": "k", "b": "branches"},
    "HFPromptLookup": {"K": "k", "n": "max_ngram"},
    "HFAssisted": {"K": "num_assistant_tokens"},
    "Streaming": {"cache": "cache_size", "sinks": "sink_tokens"},
}


class _Spec:
    """One spec being read: the original text (for messages) and whether an old spelling was met."""

    def __init__(self, text: str):
        self.text, self.old = text, False

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.text!r}: {message}")


def parse_methods(spec: str) -> list:
    """The methods a spec names, in order (see the module docstring for the syntax)."""
    return _parse(spec, stacklevel=3)


def parse_method(spec: str):
    """Exactly one method from a spec such as "FixedTree(depth=8, branch=3)" or "AR"."""
    methods = _parse(spec, stacklevel=3)
    if len(methods) != 1:
        raise ValueError(f"{spec!r} names {len(methods)} methods; expected one")
    return methods[0]


def _parse(spec: str, stacklevel: int) -> list:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a method spec must be a non-empty string such as 'DynaTree(draft_bits=4)', got {spec!r}")
    state = _Spec(spec)
    try:
        tree = ast.parse(f"[{spec}\n]", mode="eval")
    except SyntaxError as error:
        raise state.error(f"not a method spec ({error.msg}); write methods as Python calls separated by commas, "
                          "e.g. AR, Linear(k=4, draft_bits=4)") from None
    if not isinstance(tree.body, ast.List):
        raise state.error("write methods as Python calls separated by commas, e.g. AR, Linear(k=4, draft_bits=4)")
    items = [_options(node, state) for node in tree.body.elts]
    count = sum(math.prod(len(values) for values in options.values()) for _, options in items)
    if count > MAX_METHODS:
        raise state.error(f"names {count:,} methods; at most {MAX_METHODS} in one spec (sweep fewer values)")
    methods = [_build(cls, dict(zip(options, combo)), state)
               for cls, options in items for combo in itertools.product(*options.values())]
    if state.old:
        shown = ", ".join(describe(m) for m in methods[:4]) + (", ..." if len(methods) > 4 else "")
        warnings.warn(f"{spec!r} is an old spelling; write the constructor's own syntax: {shown}",
                      DeprecationWarning, stacklevel=stacklevel)
    return methods


def _class(name: str, state: _Spec):
    classes = method_classes()
    cls = classes.get(ALIASES.get(name, name))
    if cls is None:
        raise state.error(f"unknown method {name!r}; known: {', '.join(sorted([*classes, *ALIASES]))}")
    return cls


def _options(node, state: _Spec, sweep: bool = True) -> tuple[type, dict]:
    """(class, {field: candidate values}) of one method node; a sweep's values stay a range until built."""
    if isinstance(node, ast.Name):
        return _class(node.id, state), {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise state.error(f"{ast.unparse(node)!r} is not a method; write e.g. Linear(k=4) or AR")
    cls = _class(node.func.id, state)
    fields = [f for f in cls.__dataclass_fields__.values() if f.init]
    if len(node.args) > len(fields):
        raise state.error(f"{cls.__name__} takes at most {len(fields)} positional arguments, got {len(node.args)}")
    given = [(f.name, arg) for f, arg in zip(fields, node.args)]
    for kw in node.keywords:
        if kw.arg is None:
            raise state.error("** arguments are not read; name each parameter")
        given.append((_keyword(cls, kw.arg, state), kw.value))
    options = {}
    for name, value in given:
        if name in options:
            raise state.error(f"{cls.__name__}: {name} is given twice")
        options[name] = _values(value, state, sweep)
    return cls, options


def _keyword(cls, name: str, state: _Spec) -> str:
    """A keyword as the class reads it: a former label's abbreviation translated (the name is checked in _build,
    after a split class's old parameters have been upgraded)."""
    old = OLD_KEYWORDS.get(cls.__name__, {}).get(name) if name not in valid_fields(cls) else None
    state.old = state.old or old is not None
    return old or name


def _values(node, state: _Spec, sweep: bool):
    """The candidate values of one argument: a list or range() sweeps (top level only), a method call is a method,
    anything else a Python literal."""
    if sweep and isinstance(node, ast.List):
        return [_values(e, state, False)[0] for e in node.elts]
    if sweep and isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        try:
            return range(*(ast.literal_eval(a) for a in node.args))
        except (ValueError, TypeError) as error:
            raise state.error(f"range() takes integer literals: {error}") from None
    if isinstance(node, (ast.Call, ast.Name)):
        cls, options = _options(node, state, sweep=False)
        return [_build(cls, {k: v[0] for k, v in options.items()}, state)]
    try:
        return [ast.literal_eval(node)]
    except (ValueError, SyntaxError):
        raise state.error(f"{ast.unparse(node)!r} is not a literal or a method; values are numbers, strings, "
                          "True/False/None, tuples or method calls") from None


def _build(cls, kwargs: dict, state: _Spec):
    name, upgraded = upgrade_kwargs(cls.__name__, kwargs)  # a class split since: DynaTree(phase=3) -> AdaptiveTree
    state.old = state.old or (name, set(upgraded)) != (cls.__name__, set(kwargs))
    cls = method_classes()[name]
    unknown = [k for k in upgraded if k not in valid_fields(cls)]
    if unknown:
        raise state.error(f"{cls.__name__} has no parameter {unknown[0]!r}; its parameters: "
                          f"{', '.join(f.name for f in cls.__dataclass_fields__.values() if f.init)}")
    state.old = state.old or any(k in getattr(cls, "renamed_parameters", {}) for k in upgraded)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # old parameters: the spec's one warning says it
            return cls(**upgraded)
    except (TypeError, ValueError) as error:
        raise state.error(f"{cls.__name__}: {error}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Stored rows


@functools.lru_cache(maxsize=8192)
def stored_method(method_type, method_params, method):
    """The method of a stored row, in today's classes: from its method_type and method_params (JSON;
    methods.method_from_row), else from its `method` text (files that kept only that). Deprecation warnings are not
    repeated for stored data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if isinstance(method_type, str) and isinstance(method_params, str) and method_params:
            return method_from_row(method_type, json.loads(method_params))
        return parse_method(str(method))


def _column(table, name):
    return table[name] if name in table.columns else [None] * len(table)


def row_methods(table, strict: bool = True) -> list:
    """One method per row of a results table (see `stored_method`). strict=False gives None for a row whose method
    cannot be rebuilt (a class or parameter that no longer exists) instead of raising."""
    out = []
    for t, p, m in zip(_column(table, "method_type"), _column(table, "method_params"), _column(table, "method")):
        try:
            out.append(stored_method(t, p, m))
        except (ValueError, TypeError) as error:
            if strict:
                raise ValueError(f"stored row of {m!r} ({t}, {p}): {error}") from None
            out.append(None)
    return out


def row_identities(table) -> list[tuple[str, str]]:
    """methods.names.identity of every row's method; the stored (method_type, method_params) as they are where the
    method cannot be rebuilt, so such a row still matches itself."""
    return [identity(m) if m is not None else (t, p) for m, t, p in
            zip(row_methods(table, strict=False), _column(table, "method_type"), _column(table, "method_params"))]


def canonical(table):
    """`table` with `method`, `method_type` and `method_params` written as today's code writes them (describe,
    class name, identity's JSON), so that rows stored under an older spelling compare equal to new ones. Rows whose
    method cannot be rebuilt keep their stored text, with a warning naming them."""
    if table.empty or "method" not in table.columns:
        return table
    methods = row_methods(table, strict=False)
    lost = sorted({str(m) for m, got in zip(table["method"], methods) if got is None})
    if lost:
        warnings.warn(f"stored rows whose method dynatree_lib cannot rebuild (a class it does not export, a parameter "
                      f"no longer there) are kept as stored: {lost}", stacklevel=2)
    table = table.copy()
    table["method"] = [describe(m) if m is not None else old for m, old in zip(methods, table["method"])]
    if "method_type" in table.columns or "method_params" in table.columns:
        ids = [identity(m) if m is not None else None for m in methods]
        for i, column in enumerate(("method_type", "method_params")):
            old = _column(table, column)
            table[column] = [got[i] if got is not None else o for got, o in zip(ids, old)]
    return table
