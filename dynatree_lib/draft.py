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
from .mask import tree_attention_mask, tree_position_ids

# expand(tree, frontier, cand_logp, cand_tokens) -> (parents, tokens, logp) of the children to add.
# cand_* are the draft's top-`width` continuations of each frontier node, best first, shape (len(frontier), width).
Expand = Callable[[tree_mod.Tree, torch.Tensor, torch.Tensor, torch.Tensor], tuple]


@dataclass
class DraftState:
    """The draft model's cache plus the committed tokens it has not seen yet (the last one is the next root)."""

    cache: object
    pending: list[int] = field(default_factory=list)


@dataclass
class Drafted:
    tree: tree_mod.Tree
    base: int  # draft cache length once the root is in it; tree node fed[i] sits at slot base + i
    fed: list[int]  # non-root tree nodes whose keys/values are in the draft cache, in slot order
    forwards: int


def forward(model, input_ids, cache, position_ids=None, attention_mask=None, logits_to_keep=0):
    return model(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=logits_to_keep,
    ).logits[0]


def _candidates(logits: torch.Tensor, width: int):
    logp = torch.log_softmax(logits.float(), dim=-1)
    return torch.topk(logp, width, dim=-1)


@torch.no_grad()
def draft_tree(model, state: DraftState, expand: Expand, width: int, max_depth: int) -> Drafted:
    """Grow a tree of at most `max_depth` levels below the root `state.pending[-1]`."""
    device = model.device
    start = kvcache.cache_len(state.cache)
    pending = torch.tensor([state.pending], dtype=torch.long, device=device)
    positions = torch.arange(start, start + pending.shape[1], device=device).unsqueeze(0)
    logits = forward(model, pending, state.cache, position_ids=positions, logits_to_keep=1)
    base = start + pending.shape[1]
    root_pos = base - 1
    tree = tree_mod.root(state.pending[-1], device=device)
    frontier = torch.zeros(1, dtype=torch.long, device=device)
    fed: list[int] = []
    forwards = 1
    for level in range(1, max_depth + 1):
        cand_logp, cand_tokens = _candidates(logits, width)
        parents, tokens, logp = expand(tree, frontier, cand_logp, cand_tokens)
        if parents.numel() == 0:
            break
        n = len(tree)
        tree = tree_mod.add_level(tree, parents, tokens, logp)
        if level == max_depth:
            break
        frontier = torch.arange(n, len(tree), device=device)
        keys = torch.tensor(fed + frontier.tolist(), dtype=torch.long, device=device)
        mask = tree_attention_mask(tree.ancestors[frontier][:, keys], base, model.dtype)
        positions = tree_position_ids(tree.depth[frontier], root_pos)
        logits = forward(model, tree.tokens[frontier].unsqueeze(0), state.cache, positions, mask)
        fed.extend(frontier.tolist())
        forwards += 1
    return Drafted(tree=tree, base=base, fed=fed, forwards=forwards)


def commit_draft(state: DraftState, drafted: Drafted, path: list[int], bonus: int) -> None:
    """Keep the accepted path in the draft cache; queue what the draft has not processed for the next round."""
    slot_of = {node: drafted.base + i for i, node in enumerate(drafted.fed)}
    accepted = path[1:]
    kept = [slot_of[node] for node in accepted if node in slot_of]  # a fed node's ancestors are fed: a prefix
    kvcache.keep(state.cache, drafted.base, kept)
    tokens = drafted.tree.tokens.tolist()
    state.pending = [tokens[node] for node in accepted[len(kept):]] + [bonus]


def fixed_expand(branch: int, threshold: float, max_nodes: int) -> Expand:
    """Top-`branch` children per frontier node; drop a child whose cumulative probability is below `threshold`;
    when the node budget would overflow, keep the children with the highest cumulative probability."""
    log_threshold = math.log(threshold) if threshold > 0 else -math.inf

    def expand(tree, frontier, cand_logp, cand_tokens):
        cand_logp, cand_tokens = cand_logp[:, :branch], cand_tokens[:, :branch]
        cum = tree.cum_logp[frontier].unsqueeze(1) + cand_logp
        keep = cum >= log_threshold
        rows, cols = torch.nonzero(keep, as_tuple=True)
        room = max_nodes - tree.num_draft
        if rows.numel() > room:
            best = torch.topk(cum[rows, cols], room).indices.sort().values  # sorted: stay in BFS/parent order
            rows, cols = rows[best], cols[best]
        return frontier[rows], cand_tokens[rows, cols], cand_logp[rows, cols]

    return expand
