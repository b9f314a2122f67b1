"""Tree drafting: the draft model grows the token tree one level per forward pass.

Each level feeds the whole frontier in one batch, under the tree attention mask, on top of the draft's own KV cache,
so a depth-D tree costs D draft forwards whatever its width. Which children a frontier node gets is the job of an
`expand` policy (fixed top-B with threshold and budget here; adaptive policies live beside their methods).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import kvcache, tree as tree_mod
from ..models.vocab import full_probs
from .forward import forward
from .mask import tree_attention_mask, tree_position_ids
from .sampling import Proposals, Sampling, draw_without_replacement, sampled_candidates

# expand(tree, frontier, cand_logp, cand_tokens) -> (parents, tokens, logp) of the children to add.
# cand_* are the draft's top-`width` continuations of each frontier node, best first, shape (len(frontier), width).
# When sampling they are `width` draws without replacement from the draft's processed distribution, still best first.
Expand = Callable[[tree_mod.Tree, torch.Tensor, torch.Tensor, torch.Tensor], tuple]


@dataclass
class DraftState:
    """The draft model's cache plus the committed tokens it has not seen yet (the last one is the next root)."""

    cache: object
    pending: list[int] = field(default_factory=list)
    sampling: Sampling | None = None  # set when the run samples: draft_tree then draws candidates instead of top-k
    # ModelPair.shared_vocab (None: no limit): token ids at or above it are padding rows of one of the two output
    # layers; they are never proposed, and a target token there (no text maps to it) is read as id vocab - 1.
    vocab: int | None = None


@dataclass
class Drafted:
    tree: tree_mod.Tree
    base: int  # draft cache length once the root is in it; tree node fed[i] sits at slot base + i
    fed: list[int]  # non-root tree nodes whose keys/values are in the draft cache, in slot order (-1: see reorder)
    forwards: int
    samples: Proposals | None = None  # only when sampling: each expanded node's draws and q, for accept_sampling


def _candidates(logits: torch.Tensor, width: int, vocab: torch.Tensor | None = None):
    """The top-`width` (log-prob, token id) per row. `vocab` maps the columns of a trimmed draft's logits (it scores
    only those token ids: models/vocab.py) back to token ids; fewer columns than `width` give fewer candidates."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    values, indices = torch.topk(logp, min(width, logp.shape[-1]), dim=-1)
    return values, (indices if vocab is None else vocab[indices])


@torch.no_grad()
def draft_tree(model, state: DraftState, expand: Expand, width: int, max_depth: int, select_frontier=None) -> Drafted:
    """Grow a tree of at most `max_depth` levels below the root `state.pending[-1]`.

    `select_frontier(tree, new_nodes) -> nodes` (optional) picks which new nodes may get children: only those are fed
    to the draft, so a policy that already knows a node stays a leaf saves its draft compute. Default: all of them.
    """
    device = model.device
    start = kvcache.cache_len(state.cache)
    pending = torch.tensor([state.pending], dtype=torch.long, device=device)
    if state.vocab is not None and max(state.pending) >= state.vocab:
        pending = pending.clamp(max=state.vocab - 1)
    positions = torch.arange(start, start + pending.shape[1], device=device).unsqueeze(0)
    logits = forward(model, pending, state.cache, position_ids=positions, logits_to_keep=1)
    base = start + pending.shape[1]
    root_pos = base - 1
    tree = tree_mod.root(state.pending[-1], device=device)
    frontier = torch.zeros(1, dtype=torch.long, device=device)
    fed: list[int] = []
    forwards = 1
    sampling, drawn = state.sampling, []
    vocab = getattr(model, "draft_vocab", None)  # a trimmed output layer's token ids (models/vocab.py), else None
    for level in range(1, max_depth + 1):
        if state.vocab is not None and logits.shape[-1] > state.vocab:
            logits = logits[..., :state.vocab]  # the draft's rows past the target's are padding: never proposed
        if sampling is None:
            cand_logp, cand_tokens = _candidates(logits, width, vocab)
            parents, tokens, logp = expand(tree, frontier, cand_logp, cand_tokens)
        else:
            # q over every token id (a trimmed draft's q is zero outside its kept ids)
            q = full_probs(model, sampling.probs(logits), getattr(state, "vocab", None)).to(sampling.generator.device)
            draws = draw_without_replacement(q, width, sampling.generator)
            drawn.append((frontier.to(q.device), draws, q))
            parents, tokens, logp = expand(tree, frontier, *sampled_candidates(q, draws))
            real = logp > -math.inf  # slots past q's support are not tokens
            parents, tokens, logp = parents[real], tokens[real], logp[real]
        if parents.numel() == 0:
            break
        n = len(tree)
        tree = tree_mod.add_level(tree, parents, tokens, logp)
        if level == max_depth:
            break
        frontier = torch.arange(n, len(tree), device=device)
        if select_frontier is not None:
            frontier = select_frontier(tree, frontier)
            if frontier.numel() == 0:
                break
        keys = torch.tensor(fed + frontier.tolist(), dtype=torch.long, device=device)
        mask = tree_attention_mask(tree.ancestors[frontier][:, keys], base, model.dtype)
        positions = tree_position_ids(tree.depth[frontier], root_pos)
        logits = forward(model, tree.tokens[frontier].unsqueeze(0), state.cache, positions, mask)
        fed.extend(frontier.tolist())
        forwards += 1
    samples = Proposals(*(torch.cat(parts) for parts in zip(*drawn))) if drawn else None
    return Drafted(tree=tree, base=base, fed=fed, forwards=forwards, samples=samples)


def commit_draft(state: DraftState, drafted: Drafted, path: list[int], bonus: int) -> None:
    """Keep the accepted path in the draft cache; queue what the draft has not processed for the next round."""
    slot_of = {node: drafted.base + i for i, node in enumerate(drafted.fed)}
    accepted = path[1:]
    kept = [slot_of[node] for node in accepted if node in slot_of]  # a fed node's ancestors are fed: a prefix
    if state.cache is not None:  # model-free drafters (n-gram lookup) have no draft cache
        kvcache.keep(state.cache, drafted.base, kept)
    tokens = drafted.tree.tokens.tolist()
    state.pending = [tokens[node] for node in accepted[len(kept):]] + [bonus]


def select_children(tree, frontier, cand_logp, cand_tokens, keep=None, threshold: float = 0.0, max_nodes=None):
    """The children to add among the candidates (where `keep` is True; all when None): drop a child whose cumulative
    probability is below `threshold`; when more remain than the `max_nodes` budget has room for (None: no budget),
    keep those with the highest cumulative probability. Returns (parents, tokens, logp) in BFS/parent order."""
    log_threshold = math.log(threshold) if threshold > 0 else -math.inf
    cum = tree.cum_logp[frontier].unsqueeze(1) + cand_logp
    ok = cum >= log_threshold
    if keep is not None:
        ok &= keep
    rows, cols = torch.nonzero(ok, as_tuple=True)
    if max_nodes is not None:
        room = max(max_nodes - tree.num_draft, 0)
        if rows.numel() > room:
            best = torch.topk(cum[rows, cols], room).indices.sort().values  # sorted: stay in BFS/parent order
            rows, cols = rows[best], cols[best]
    return frontier[rows], cand_tokens[rows, cols], cand_logp[rows, cols]


def fixed_expand(branch: int, threshold: float, max_nodes: int) -> Expand:
    """Top-`branch` children per frontier node; drop a child whose cumulative probability is below `threshold`;
    when the node budget would overflow, keep the children with the highest cumulative probability."""

    def expand(tree, frontier, cand_logp, cand_tokens):
        return select_children(tree, frontier, cand_logp[:, :branch], cand_tokens[:, :branch],
                               threshold=threshold, max_nodes=max_nodes)

    return expand


def reorder(drafted: Drafted, tree: tree_mod.Tree, order: list[int]) -> Drafted:
    """`drafted` with its tree replaced by the nodes `order` of `tree` (which grew from drafted.tree by appending):
    root first, every parent before its children, a subset or a permutation. Fed nodes that `order` drops keep their
    cache slot under node -1, so they can never be accepted and commit_draft drops their slot."""
    index = torch.tensor(order, dtype=torch.long, device=tree.tokens.device)
    new_of = torch.full((len(tree),), -1, dtype=torch.long, device=index.device)
    new_of[index] = torch.arange(len(order), device=index.device)
    parents = new_of[tree.parents[index].clamp(min=0)]
    parents[0] = -1
    picked = tree_mod.Tree(
        tokens=tree.tokens[index], parents=parents, depth=tree.depth[index], logp=tree.logp[index],
        cum_logp=tree.cum_logp[index], ancestors=tree.ancestors[index][:, index],
    )
    fed = torch.tensor(drafted.fed, dtype=torch.long, device=index.device)
    fed = torch.where(fed >= 0, new_of[fed.clamp(min=0)], -1).tolist()  # a slot dropped earlier stays dropped
    samples = drafted.samples
    if samples is not None:  # renumber the expanded nodes; a dropped node's draws can no longer be reached
        nodes = new_of[samples.nodes]
        kept = nodes >= 0
        samples = Proposals(nodes[kept], samples.tokens[kept], samples.probs[kept])
    return Drafted(tree=picked, base=drafted.base, fed=fed, forwards=drafted.forwards, samples=samples)
