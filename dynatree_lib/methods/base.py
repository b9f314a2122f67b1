"""Decoding methods as small frozen dataclasses.

A method is pure configuration: `dynatree_lib.generate(pair, prompt, method, max_new_tokens)` dispatches on its type.
Validation happens at construction so that a bad parameter fails where it was written, with its name in the error.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from functools import singledispatch
from typing import Callable

# the other method modules import these checks from here
from ..core.checks import _check_draft_bits, _check_draft_options, _check_int, _check_prob  # noqa: F401
from ..core.draft import DraftState, Expand, draft_tree
from ..core.loop import Run, decode, speculate


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


@dataclass(frozen=True)
class Autoregressive:
    """Target-only greedy decoding: the reference every other method must reproduce token for token."""

    name = "AR"
    needs_draft = False
    rolls_back_cache = False  # exact on sliding-window models at any length (core.loop.check_inputs)

    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class HFAssisted:
    """transformers' own assisted generation (`generate(..., assistant_model=draft)`), with its default
    dynamic draft-length schedule unless `num_assistant_tokens` is given."""

    num_assistant_tokens: int | None = None
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft (see ModelPair.with_draft_bits)
    name = "HFAssisted"
    needs_draft = True
    supports_sampling = False
    rolls_back_cache = False  # transformers' own cache handling

    def label(self) -> str:
        return self.name if self.num_assistant_tokens is None else f"HFAssisted(K={self.num_assistant_tokens})"

    def __post_init__(self):
        _check_draft_bits(self.draft_bits)
        if self.num_assistant_tokens is not None:
            _check_int("num_assistant_tokens", self.num_assistant_tokens, 1)


@dataclass(frozen=True)
class Linear:
    """Classic speculative decoding: the draft proposes a chain of `k` tokens, verified in one target forward."""

    k: int = 5
    draft_bits: int | None = None
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (models/vocab.py)
    name = "Linear"
    needs_draft = True

    def label(self) -> str:
        return f"Linear(K={self.k})"

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        _check_int("k", self.k, 1)


@dataclass(frozen=True)
class FixedTree:
    """The research's "Tree V2": top-`branch` children per node, level by level up to `depth`; a child is pruned
    when its cumulative draft probability falls below `threshold`; at most `max_nodes` draft nodes."""

    depth: int = 5
    branch: int = 2
    threshold: float = 0.03
    max_nodes: int = 128
    draft_bits: int | None = None
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (models/vocab.py)
    name = "FixedTree"
    needs_draft = True

    def label(self) -> str:
        return f"FixedTree(D={self.depth},B={self.branch},tau={self.threshold:g},N={self.max_nodes})"

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        _check_int("depth", self.depth, 1)
        _check_int("branch", self.branch, 1)
        _check_prob("threshold", self.threshold)
        _check_int("max_nodes", self.max_nodes, 1)


def label(method) -> str:
    """The method's full configuration in constructor syntax, e.g. 'DynaTree(draft_bits=4)' (non-default
    parameters only; methods.names.describe): what the `method` column of stored results holds, read back by
    `bench.parse_method`. For readers, methods.names.display_name gives 'DynaTree · int4 draft'."""
    from .names import describe

    return describe(method)


@renamed(num_tokens="k")
@dataclass(frozen=True)
class HFPromptLookup:
    """transformers' own prompt-lookup decoding (`generate(..., prompt_lookup_num_tokens=...)`): drafts are copied
    from n-gram matches in the context, no draft model. `k`: tokens proposed per round (transformers'
    prompt_lookup_num_tokens; was `num_tokens`)."""

    k: int = 10
    max_ngram: int = 2
    name = "HFPromptLookup"
    needs_draft = False
    supports_sampling = False
    rolls_back_cache = False

    def label(self) -> str:
        return f"HFPromptLookup(K={self.k},n={self.max_ngram})"

    def __post_init__(self):
        _check_int("k", self.k, 1)
        _check_int("max_ngram", self.max_ngram, 1)


# ---------------------------------------------------------------------------------------------------------------------
# The drafter registry: how each method proposes a round's tree. The loop (core.loop.speculate) knows no method.


@dataclass
class TreePolicy:
    """A method's way of growing one round's tree with the draft model: `expand` picks each level's children among
    the draft's top-`width` candidates, at most `depth` levels, `select_frontier` (optional) which new nodes get
    children; `on_round(record)` learns from each finished round. `branches(p)` (children allowed per node from the
    draft's top-1 probability) and `threshold` (the cumulative-probability pruning in force) let a figure say why a
    candidate was dropped."""

    expand: Expand
    width: int
    depth: int
    select_frontier: Callable | None = None
    on_round: Callable | None = None
    branches: Callable | None = None
    threshold: float = 0.0

    def draft_round(self, run: Run, state: DraftState, max_depth: int):
        return draft_tree(run.pair.draft, state, self.expand, self.width, min(self.depth, max_depth),
                          self.select_frontier)


@singledispatch
def policy(method) -> TreePolicy:
    """A fresh TreePolicy for one generation of `method` (methods that draft level by level register one)."""
    raise TypeError(f"{label(method)} does not grow its tree level by level with the draft model")


@singledispatch
def drafter(method):
    """A fresh (draft_round, on_round or None) for one generation of `method`: what `speculate` runs. Methods with
    a TreePolicy get it from there; others (best-first, n-gram lookup) register their own."""
    p = policy(method)
    return p.draft_round, p.on_round


def speculative(cls):
    """Class decorator: `generate` runs `cls` through `speculate` with its registered drafter."""

    @decode.register(cls)
    def _(method, run: Run) -> None:
        draft_round, on_round = drafter(method)
        speculate(run, draft_round, on_round)
        state = getattr(on_round, "__self__", None)  # a drafter's state may summarise the generation
        if hasattr(state, "summary"):
            run.extra.update(state.summary())

    return cls
