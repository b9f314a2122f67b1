"""The fixed policies: plain decoding, the chain of `k` draft tokens, and the research's fixed tree ("Tree V2")."""
from __future__ import annotations

import torch

from ..core.draft import fixed_expand
from ..core.loop import Run, autoregressive, decode
from .base import Autoregressive, FixedTree, Linear, TreePolicy, policy, speculative


@decode.register
def _(method: Autoregressive, run: Run) -> None:
    autoregressive(run)


@policy.register
def _(method: Linear) -> TreePolicy:
    return TreePolicy(fixed_expand(1, 0.0, method.k), width=1, depth=method.k,
                      branches=lambda p: torch.ones_like(p, dtype=torch.long))


@policy.register
def _(method: FixedTree) -> TreePolicy:
    return TreePolicy(fixed_expand(method.branch, method.threshold, method.max_nodes), width=method.branch,
                      depth=method.depth, branches=lambda p: torch.full_like(p, method.branch, dtype=torch.long),
                      threshold=method.threshold)


speculative(Linear)
speculative(FixedTree)
