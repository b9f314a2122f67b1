"""Lossless sampling (temperature > 0): the processed distribution, drafting by sampling, and recursive rejection
sampling over the token tree.

With temperature > 0 the promise changes from "the target's tokens" to "the target's distribution": whatever the
method, the generated sequence is distributed exactly as if the target alone sampled each token from
`process_logits(its logits)`. Speculative decoding keeps that promise with rejection sampling (Leviathan et al.,
2023; Chen et al., 2023), generalised to several candidates per node (SpecInfer, Miao et al., 2024; Sequoia,
Chen et al., 2024; EAGLE, Li et al., 2024):

- drafting: each node the draft expands gets `width` candidates drawn one after another WITHOUT replacement from the
  draft's processed distribution q (Sequoia's choice: at low temperature, i.i.d. draws repeat the same token and
  waste tree nodes). The expand policy then decides which candidates become tree nodes, exactly as in greedy mode.
- acceptance (`accept_sampling`): at a node, with p the target's distribution there, try the candidates in draw
  order; candidate x_i was drawn from q_i (q with x_1..x_{i-1} removed and renormalised). Accept it with probability
  min(1, p(x_i) / q_i(x_i)); on rejection set p <- normalize(max(p - q_i, 0)) and go on. When no candidate is
  accepted, the bonus token is drawn from the residual p.

Why this is exact (the verification of Sequoia, arXiv:2402.12374; SpecInfer's multi-step speculative sampling,
arXiv:2305.09781, is the same rule with i.i.d. draws and q never updated): a step emits y with probability
min(p(y), q_i(y)) + (1 - sum_x min(p(x), q_i(x))) * r(y) = p(y), where r = normalize(max(p - q_i, 0)) is what the
remaining steps emit. That claim is the induction on the number of remaining candidates: given x_i and its rejection,
the later candidates are draws without replacement from q_{i+1} (whatever x_i was), r does not depend on x_i, and
with no candidate left the bonus is drawn from r itself.

Two consequences of that argument shape this module. First, every drawn candidate must be tried, in draw order,
whether or not the expand policy put it in the tree: a threshold or a node budget that silently dropped drawn
candidates would bias the output. A candidate outside the tree needs nothing but p at its parent, so it is tried like
the others and, if accepted, is the round's last token (there are no target logits after it). Second, which
candidates get tree nodes and how deep their subtrees go only matters after acceptance, so the policy is free, with
one condition: whether a node stays in the tree must not depend on the draws made at or below it, or its draws would
no longer be distributed as q once it is reached. `draft_tree` settles a node's membership before expanding it, and a
later pruning must rank a node without looking at its descendants (a global top-N by cumulative draft probability
does: a descendant never ranks above its ancestor).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .tree import Tree


@dataclass(frozen=True)
class Sampling:
    """How a run samples, and the one random stream that every draw of the run (draft and target) comes from."""

    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return process_logits(logits, self.temperature, self.top_k, self.top_p)

    def sample(self, logits: torch.Tensor) -> int:
        """One token from the processed distribution of a single row of logits."""
        return int(torch.multinomial(self.probs(logits), 1, generator=self.generator))


def make_sampling(temperature, top_k, top_p, seed, device) -> Sampling | None:
    """Validate transformers-style sampling options; None for temperature 0 (greedy, the default path)."""
    real = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
    if not real or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None and (
        not isinstance(top_p, numbers.Real) or isinstance(top_p, bool) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise ValueError(f"seed must be None or an integer, got {seed!r}")
    if temperature == 0:
        return None
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy: not reproducible, as asked
    else:
        generator.manual_seed(int(seed))
    return Sampling(float(temperature), None if top_k is None else int(top_k),
                    None if top_p is None else float(top_p), generator)


def process_logits(logits: torch.Tensor, temperature: float, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """Logits (..., vocab) -> the sampling distribution, processed as transformers' warpers do, in their order:
    divide by `temperature`, keep the `top_k` largest (ties with the k-th kept), then keep the smallest set of most
    probable tokens whose mass reaches `top_p`. Temperature 0 is greedy: all mass on the argmax."""
    logits = logits.float()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop a token when the more probable ones already reach top_p (the most probable one always stays).
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


# ---------------------------------------------------------------------------------------------------------------------
# Drafting


@dataclass(frozen=True)
class Proposals:
    """What the draft proposed at every node it expanded in one round (kept only when sampling).

    Row r belongs to tree node nodes[r]: tokens[r] are its candidates in draw order (-1 once q's support is used up)
    and probs[r] is q, the draft's processed distribution after that node. Candidates the expand policy left out of
    the tree are still here: the acceptance test must try them (see the module docstring).
    """

    nodes: torch.Tensor  # (e,) long
    tokens: torch.Tensor  # (e, width) long
    probs: torch.Tensor  # (e, vocab) float32


def draw_without_replacement(probs: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` tokens per row of `probs`, drawn one after another without replacement, in draw order; -1 past the support.

    Exponential race: give token x the key q(x) / E_x with E_x ~ Exp(1). The largest key is a draw from q and, by the
    memorylessness of the exponential, the next largest is a draw from q without it, renormalised, and so on.
    """
    noise = torch.empty_like(probs).exponential_(generator=generator)
    keys = torch.where(probs > 0, probs / noise, -1.0)
    keys, tokens = torch.topk(keys, n, dim=-1)
    return torch.where(keys >= 0, tokens, -1)


def sampled_candidates(probs: torch.Tensor, drawn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The drawn tokens as an expand policy expects candidates: (log q, tokens), most probable first.
    Slots past the support get log-prob -inf (and token 0); `draft_tree` never adds them to the tree."""
    safe = drawn.clamp(min=0)
    logq = torch.where(drawn >= 0, probs.gather(-1, safe).log(), -math.inf)
    logq, order = logq.sort(dim=-1, descending=True)
    return logq, safe.gather(-1, order)


# ---------------------------------------------------------------------------------------------------------------------
# Acceptance


def accept_sampling(tree: Tree, target_probs: torch.Tensor, draft_probs: Proposals | None,
                    generator: torch.Generator) -> tuple[list[int], int]:
    """Recursive rejection sampling down the tree (see the module docstring): returns the accepted path (node indices
    from the root) and the round's last token. Committing both is distributed exactly as target-only sampling.

    `target_probs[i]` is the target's processed distribution after node i. At each node the recorded draws come
    first; then the node's tree children that are not draws (tokens a drafter chose deterministically: an n-gram
    continuation, or any node the draft did not expand by sampling), each a proposal from a point mass, q_i =
    one-hot(x_i): accepted with probability p(x_i), otherwise removed from p. The same induction covers them, since
    they are fixed before any of this round's acceptance draws; they are exact, only less likely to be accepted.
    """
    parents, tokens = tree.parents.tolist(), tree.tokens.tolist()
    children: dict[int, list[int]] = {}
    for node in range(1, len(tree)):
        children.setdefault(parents[node], []).append(node)
    rows = {} if draft_probs is None else {node: r for r, node in enumerate(draft_probs.nodes.tolist())}
    path, node = [0], 0
    while True:
        p, kids = target_probs[node], children.get(node, [])
        q, drawn = None, []
        if node in rows:
            q = draft_probs.probs[rows[node]]
            if q.shape[-1] < p.shape[-1]:  # a draft with fewer output rows than the target: q is 0 past them
                q = torch.nn.functional.pad(q, (0, p.shape[-1] - q.shape[-1]))
            drawn = [x for x in draft_probs.tokens[rows[node]].tolist() if x >= 0]
        fixed = [tokens[c] for c in kids if tokens[c] not in drawn]
        accepted = None
        for i, x in enumerate(drawn + fixed):
            qx = float(q[x]) if i < len(drawn) else 1.0
            u = float(torch.rand((), generator=generator, device=generator.device))
            if u * qx < float(p[x]):  # u < min(1, p(x) / q(x)), without dividing
                accepted = x
                break
            if i < len(drawn):
                residual = (p - q).clamp(min=0.0)
                q = q.clone()
                q[x] = 0.0
                q = _normalized(q, q)
            else:
                residual = p.clone()
                residual[x] = 0.0
            p = _normalized(residual, p)
        if accepted is None:
            return path, int(torch.multinomial(p, 1, generator=generator))
        child = next((c for c in kids if tokens[c] == accepted), None)
        if child is None:  # a draw the policy kept out of the tree: no target logits after it, the round ends here
            return path, accepted
        path.append(child)
        node = child


def _normalized(v: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    # A residual can only vanish through float rounding (rejection needs q(x) > p(x), so max(p - q, 0) has mass
    # mathematically); keep the previous distribution rather than divide by zero.
    total = float(v.sum())
    return v / total if total > 0 else fallback
