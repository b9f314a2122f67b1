"""Decoding methods as small frozen dataclasses, one algorithm per class, every field read by it.

A method is pure configuration, validated at construction (a bad parameter fails where it was written, with its name
in the error). `generate` runs a `Speculative` method through `core.loop.speculate` with the Drafter its
`drafter(run)` returns; a method with its own loop (plain decoding, transformers' peers) defines `decode(run)`.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from ..core.checks import _check_draft_options, _check_int, _check_prob
from ..core.draft import DraftState, Expand, Stage, draft_tree, fixed_expand
from ..core.loop import Run, autoregressive
from ..core.method import Drafter, Method, Speculative

def renamed(**old_to_new):
    """Class decorator for a method dataclass whose parameters were renamed: `Cls(old=v)` still works, as
    `Cls(new=v)`, with a DeprecationWarning; so does reading `method.old`. The vocabulary: `max_nodes` for node
    budgets, `max_depth` for depth caps, `k` for the length of a proposed chain (Linear's draft, the n-gram
    continuations of PromptLookup, HybridTree and HFPromptLookup)."""

    def wrap(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{cls.__name__}: give {new}= only ({old}= is its deprecated name)")
                    warnings.warn(f"{cls.__name__}({old}=...) is deprecated, use {new}=", DeprecationWarning,
                                  stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)

        def alias(old, new):
            def get(self):
                warnings.warn(f"{cls.__name__}.{old} is deprecated, use .{new}", DeprecationWarning, stacklevel=2)
                return getattr(self, new)
            return property(get)

        cls.__init__ = __init__
        for old, new in old_to_new.items():
            setattr(cls, old, alias(old, new))
        cls.renamed_parameters = dict(old_to_new)
        return cls

    return wrap


# Per class that was split in two: stored parameters -> (the class that runs them today, parameters it never read)
_UPGRADES: dict[str, Callable[[dict], tuple[str, tuple[str, ...]]]] = {}


def retired(upgrade: Callable[[dict], tuple[str, tuple[str, ...]]]):
    """Class decorator for a method class that used to hold more than one algorithm. `upgrade(params)` says which
    class the parameters of an old spelling mean today and which of them that class never reads; it is registered
    for stored rows (upgrade_kwargs: `method_from_row` loads them silently). A constructor call of another class's
    spelling returns an instance of that class instead, with a DeprecationWarning; the keywords this class never
    reads are accepted with a DeprecationWarning and ignored."""

    def wrap(cls):
        name, init = cls.__name__, cls.__init__
        _UPGRADES[name] = upgrade

        def __new__(klass, *args, **kwargs):
            new_type, new_kwargs = upgrade_kwargs(name, kwargs) if klass is cls else (name, kwargs)
            if new_type == name:
                return object.__new__(klass)
            from .names import method_classes

            warnings.warn(f"{name}({_spelled(kwargs)}) is deprecated, use {new_type}({_spelled(new_kwargs)})",
                          DeprecationWarning, stacklevel=2)
            return method_classes()[new_type](*args, **new_kwargs)

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            unread = [k for k in upgrade(kwargs)[1] if k in kwargs]
            if unread:
                warnings.warn(f"{name}: {', '.join(unread)} deprecated and ignored ({name} never "
                              f"read {'it' if len(unread) == 1 else 'them'})", DeprecationWarning, stacklevel=2)
                kwargs = {k: v for k, v in kwargs.items() if k not in unread}
            init(self, *args, **kwargs)

        cls.__new__ = __new__
        cls.__init__ = __init__
        return cls

    return wrap


def _spelled(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def upgrade_kwargs(type_name: str, params: dict) -> tuple[str, dict]:
    """(type, parameters) as an older version wrote them (a stored row, an old constructor call) -> (the class that
    runs that algorithm today, its parameters), dropping parameters that algorithm never read. Unchanged for a
    type that was not split. No warning: the caller decides whether to warn."""
    upgrade = _UPGRADES.get(type_name)
    if upgrade is None:
        return type_name, dict(params)
    new_type, unread = upgrade(params)
    return new_type, {k: v for k, v in params.items() if k not in unread}


def upgrade_record(type_name: str, params: dict) -> tuple[str, dict]:
    """upgrade_kwargs for a stored record, nested methods ({"method_type", "method_params"}) included."""
    def value(v):
        if isinstance(v, dict) and "method_type" in v:
            t, p = upgrade_record(v["method_type"], v.get("method_params", {}))
            return {**v, "method_type": t, "method_params": p}
        return v

    new_type, new_params = upgrade_kwargs(type_name, params)
    return new_type, {k: value(v) for k, v in new_params.items()}


def method_from_row(type_name: str, params: dict):
    """The method a stored row's (method_type, method_params) describe, in today's classes, without deprecation
    warnings: `DynaTree` rows of phase 1-3 load as AdaptiveTree, `HardwareAware` rows of shapes="fixed" as
    PlannedTree."""
    from .names import from_record

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # renamed parameters of untyped nested rows
        return from_record(*upgrade_record(type_name, params))


class TreeDrafter(Drafter):
    """A drafter that grows one round's tree level by level with the draft model: `expand` picks each level's
    children among the draft's top-`width` candidates, at most `depth` levels, `select_frontier` (optional) which new
    nodes get children. `branches(p)` (children allowed per node from the draft's top-1 probability) and `threshold`
    (the cumulative-probability pruning in force) let a figure say why a candidate was dropped (book.treeviz).
    `stage` (optional): cheap proposals the draft checks in its forwards (staged speculation, core.draft)."""

    def __init__(self, run: Run, expand: Expand, width: int, depth: int, select_frontier: Callable | None = None,
                 branches: Callable | None = None, threshold: float = 0.0, stage: Stage | None = None):
        self.run, self.expand, self.width, self.depth = run, expand, width, depth
        self.select_frontier, self.branches, self.threshold, self.stage = select_frontier, branches, threshold, stage

    def propose(self, state: DraftState, max_depth: int):
        return draft_tree(self.run.pair.draft, state, self.expand, self.width, min(self.depth, max_depth),
                          self.select_frontier, self.stage)


def fixed_drafter(run: Run, depth: int, branch: int, threshold: float, max_nodes: int) -> TreeDrafter:
    """The drafter of a fixed tree (core.draft.fixed_expand): top-`branch` children per node, `depth` levels."""
    return TreeDrafter(run, fixed_expand(branch, threshold, max_nodes), width=branch, depth=depth,
                       branches=lambda p: torch.full_like(p, branch, dtype=torch.long), threshold=threshold)


@dataclass(frozen=True)
class Autoregressive(Method):
    """Target-only greedy decoding: the reference every other method must reproduce token for token."""

    rolls_back_cache = False  # exact on sliding-window models at any length (core.loop.check_inputs)

    def decode(self, run: Run) -> None:
        autoregressive(run)


@dataclass(frozen=True)
class Linear(Speculative):
    """Classic speculative decoding: the draft proposes a chain of `k` tokens, verified in one target forward."""

    k: int = 5
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft (ModelPair.with_draft)
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (models/vocab.py)

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        _check_int("k", self.k, 1)

    def drafter(self, run: Run) -> TreeDrafter:
        return fixed_drafter(run, depth=self.k, branch=1, threshold=0.0, max_nodes=self.k)  # a one-child tree


@dataclass(frozen=True)
class FixedTree(Speculative):
    """The research's "Tree V2": top-`branch` children per node, level by level up to `depth`; a child is pruned
    when its cumulative draft probability falls below `threshold`; at most `max_nodes` draft nodes."""

    depth: int = 5
    branch: int = 2
    threshold: float = 0.03
    max_nodes: int = 128
    draft_bits: int | None = None
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (models/vocab.py)

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        _check_int("depth", self.depth, 1)
        _check_int("branch", self.branch, 1)
        _check_prob("threshold", self.threshold)
        _check_int("max_nodes", self.max_nodes, 1)

    def drafter(self, run: Run) -> TreeDrafter:
        return fixed_drafter(run, self.depth, self.branch, self.threshold, self.max_nodes)


def label(method) -> str:
    """The method's full configuration in constructor syntax, e.g. 'DynaTree(draft_bits=4)' (non-default
    parameters only; methods.names.describe): what the `method` column of stored results holds, read back by
    `bench.parse_method`. For readers, methods.names.display_name gives 'DynaTree · int4 draft'."""
    from .names import describe

    return describe(method)
