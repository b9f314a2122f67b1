"""Decoding methods as small frozen dataclasses.

A method is pure configuration: `dynatree_lib.generate(pair, prompt, method, max_new_tokens)` dispatches on its type.
Validation happens at construction so that a bad parameter fails where it was written, with its name in the error.
"""
from __future__ import annotations

from dataclasses import dataclass


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_prob(name: str, value, *, allow_one: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and (
        value <= 1 if allow_one else value < 1
    )
    if not ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must be a probability in {interval}, got {value!r}")


@dataclass(frozen=True)
class Autoregressive:
    """Target-only greedy decoding: the reference every other method must reproduce token for token."""

    name = "AR"


@dataclass(frozen=True)
class HFAssisted:
    """transformers' own assisted generation (`generate(..., assistant_model=draft)`), with its default
    dynamic draft-length schedule unless `num_assistant_tokens` is given."""

    num_assistant_tokens: int | None = None
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft (see ModelPair.with_draft_bits)
    name = "HFAssisted"

    def __post_init__(self):
        _check_draft_bits(self.draft_bits)
        if self.num_assistant_tokens is not None:
            _check_int("num_assistant_tokens", self.num_assistant_tokens, 1)


@dataclass(frozen=True)
class Linear:
    """Classic speculative decoding: the draft proposes a chain of `k` tokens, verified in one target forward."""

    k: int = 5
    draft_bits: int | None = None
    name = "Linear"

    def __post_init__(self):
        _check_draft_bits(self.draft_bits)
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
    name = "FixedTree"

    def __post_init__(self):
        _check_draft_bits(self.draft_bits)
        _check_int("depth", self.depth, 1)
        _check_int("branch", self.branch, 1)
        _check_prob("threshold", self.threshold)
        _check_int("max_nodes", self.max_nodes, 1)


def _check_draft_bits(value) -> None:
    if value not in (None, 4, 8):
        raise ValueError(f"draft_bits must be None, 8 or 4, got {value!r}")


def label(method) -> str:
    """Parses back to the same method with `bench.parse_method`."""
    base = _base_label(method)
    bits = getattr(method, "draft_bits", None)
    if not bits or "draft_bits=" in base:  # a wrapper (HybridTree) shows its inner method's setting already
        return base
    return base[:-1] + f",draft_bits={bits})" if base.endswith(")") else f"{base}(draft_bits={bits})"


def _base_label(method) -> str:
    """A short human-readable label, e.g. 'FixedTree(D=5,B=2,tau=0.03,N=128)', used in tables and figures."""
    if isinstance(method, Linear):
        return f"Linear(K={method.k})"
    if isinstance(method, FixedTree):
        return f"FixedTree(D={method.depth},B={method.branch},tau={method.threshold:g},N={method.max_nodes})"
    if isinstance(method, HFAssisted) and method.num_assistant_tokens is not None:
        return f"HFAssisted(K={method.num_assistant_tokens})"
    if isinstance(method, HFPromptLookup):
        return f"HFPromptLookup(K={method.num_tokens},n={method.max_ngram})"
    if hasattr(method, "label"):
        return method.label()
    return getattr(method, "name", type(method).__name__)


@dataclass(frozen=True)
class HFPromptLookup:
    """transformers' own prompt-lookup decoding (`generate(..., prompt_lookup_num_tokens=...)`): drafts are copied
    from n-gram matches in the context, no draft model."""

    num_tokens: int = 10
    max_ngram: int = 2
    name = "HFPromptLookup"

    def __post_init__(self):
        _check_int("num_tokens", self.num_tokens, 1)
        _check_int("max_ngram", self.max_ngram, 1)

