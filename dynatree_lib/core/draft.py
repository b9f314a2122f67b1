"""Tree drafting: the draft model grows the token tree one level per forward pass.

Each level feeds the whole frontier in one batch, under the tree attention mask, on top of the draft's own KV cache,
so a depth-D tree costs D draft forwards whatever its width. Which children a frontier node gets is the job of an
`expand` policy (fixed top-B with threshold and budget here; adaptive policies live beside their methods).

The rule and the level step are written here once: `choose` (threshold and budget on cumulative probability),
`candidates` (the draft's ranked continuations) and `draft_level` (one level grown) are what live drafting, the
batched supersets and the acceptance replay (bench.supersets, bench.replay) all call.

Staged speculation (Spector and Re, 2023) speculates on the draft itself: a `Stage` proposes cheap tokens (prompt
lookup) below a node, they ride along in the forward that feeds it, and where the level's own `expand` then picks the
proposed token, that child already has its keys, values and logits: the next level needs no forward for it. The
tree is the one the draft would have grown level by level; only the forwards that draw it are fewer.
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

# stage(tree, nodes, room) -> (node, tokens) or None: before a forward that feeds `nodes`, tokens proposed to continue
# `node` (one of them), for the draft to check in that same forward; draft_tree keeps at most `room` of them.
Stage = Callable[[tree_mod.Tree, torch.Tensor, int], "tuple[int, list[int]] | None"]


@dataclass
class DraftState:
    """The draft model's cache plus the committed tokens it has not seen yet (the last one is the next root)."""

    cache: object
    pending: list[int] = field(default_factory=list)
    sampling: Sampling | None = None  # set when the run samples: draft_tree then draws candidates instead of top-k
    vocab: int | None = None  # ModelPair.shared_vocab (None: no limit): see draft_input and candidates


@dataclass
class Drafted:
    tree: tree_mod.Tree
    base: int  # draft cache length once the root is in it; tree node fed[i] sits at slot base + i
    fed: list[int]  # non-root tree nodes whose keys/values are in the draft cache, in slot order (-1: a slot of no
    # node, a proposal the draft rejected (draft_tree's stage) or a node dropped by reorder)
    forwards: int
    samples: Proposals | None = None  # only when sampling: each expanded node's draws and q, for accept_sampling


def draft_input(tokens: list[int], vocab: int | None, device) -> torch.Tensor:
    """Committed tokens as the draft's (1, n) input ids. A target token at or above `vocab` (a padding row of one
    output layer: no text maps to it) is read as id vocab - 1, so the draft's embedding always has its row."""
    ids = torch.tensor([tokens], dtype=torch.long, device=device)
    return ids if vocab is None else ids.clamp(max=vocab - 1)


def _shared(logits: torch.Tensor, vocab: int | None) -> torch.Tensor:
    """The draft's rows past the target's (at or above `vocab`) are padding: never proposed."""
    return logits[..., :vocab] if vocab is not None and logits.shape[-1] > vocab else logits


def candidates(logits: torch.Tensor, width: int, ids: torch.Tensor | None = None, vocab: int | None = None):
    """The top-`width` (log-prob, token id) per row of the draft's `logits`, best first, never a padding id at or
    above `vocab`. `ids` maps the columns of a trimmed draft's logits (it scores only those token ids:
    models/vocab.py) back to token ids; fewer columns than `width` give fewer candidates."""
    logp = torch.log_softmax(_shared(logits, vocab).float(), dim=-1)
    values, indices = torch.topk(logp, min(width, logp.shape[-1]), dim=-1)
    return values, (indices if ids is None else ids[indices])


def grow(tree: tree_mod.Tree, children: tuple, last: bool, select_frontier=None) -> tuple[tree_mod.Tree, torch.Tensor]:
    """`tree` with `children` (parents, tokens, logp) as its next level, and the new nodes to feed the draft next:
    those `select_frontier(tree, new_nodes)` picks (default: all), none when nothing was added or the level is the
    `last` one."""
    parents, tokens, logp = children
    none = torch.zeros(0, dtype=torch.long, device=tree.tokens.device)
    if parents.numel() == 0:
        return tree, none
    n = len(tree)
    tree = tree_mod.add_level(tree, parents, tokens, logp)
    if last:
        return tree, none
    new = torch.arange(n, len(tree), device=tree.tokens.device)
    return tree, (new if select_frontier is None else select_frontier(tree, new))


def draft_level(tree, frontier, logits, expand: Expand, width: int, last: bool, select_frontier=None,
                ids: torch.Tensor | None = None, vocab: int | None = None) -> tuple[tree_mod.Tree, torch.Tensor]:
    """One greedy level of drafting: the draft's `logits` at the `frontier` nodes give their candidates
    (`candidates`), `expand` picks the children, and the tree grows by them (`grow`). Returns (tree, the nodes to
    feed next). draft_tree calls it once per level; bench.supersets' batched drafting once per level and tree."""
    return grow(tree, expand(tree, frontier, *candidates(logits, width, ids, vocab)), last, select_frontier)


@dataclass
class _Chain:
    """Tokens a Stage proposed below tree node `node`, fed in one forward: their cache slots are Drafted.fed[slot:
    slot + len(tokens)] (node -1 until adopted) and `logits` the draft's output at each. `node` moves down the chain
    as the tree adopts its tokens, `adopted` of them so far."""

    node: int
    tokens: list[int]
    slot: int
    logits: torch.Tensor
    adopted: int = 0


def _proposal(stage: Stage | None, tree, nodes: torch.Tensor, max_depth: int) -> tuple[int, list[int]]:
    """(node, tokens) that `stage` proposes before the forward feeding `nodes` ((-1, []): none). A proposal is worth
    its place in the forward only for the logits it brings, and the deepest level is never fed: tokens past depth
    max_depth - 1 are cut (`room` tells the stage how many may stay; it is asked before every forward)."""
    room = max(max_depth - 1 - int(tree.depth[nodes[0]]), 0)
    got = stage(tree, nodes, room) if stage is not None else None
    if not got or not got[1] or not room:
        return -1, []
    node, tokens = got
    if node not in nodes.tolist():
        raise ValueError(f"a stage must continue one of the nodes fed {nodes.tolist()}, got node {node}")
    return node, list(tokens)[:room]


def _staged(out: torch.Tensor, n: int, node: int, tokens: list[int], fed: list[int], chains: list) -> torch.Tensor:
    """The first `n` rows of a forward's logits (the nodes it fed); the rows after them, of the `tokens` proposed
    below `node`, become a chain holding the next cache slots, under node -1 until the tree adopts them."""
    if tokens:
        chains.append(_Chain(node, tokens, len(fed), out[n:]))
        fed.extend([-1] * len(tokens))
    return out[:n]


def _adopt(chains: list, tree: tree_mod.Tree, start: int, fed: list[int], ready: dict) -> list:
    """Where the level just grown (nodes `start`..) picked a chain's next proposed token below the chain's node, that
    child is the proposal: its cache slot becomes the node's (`fed`) and its logits are known (`ready`). Returns the
    chains still alive; a chain the draft disagreed with ends, and the rest of its slots stay under node -1."""
    if not chains:
        return chains
    grown = zip(tree.parents[start:].tolist(), tree.tokens[start:].tolist())
    child = {key: start + i for i, key in enumerate(grown)}
    alive = []
    for chain in chains:
        node = child.get((chain.node, chain.tokens[chain.adopted]))
        if node is None:
            continue
        fed[chain.slot + chain.adopted] = node
        ready[node] = chain.logits[chain.adopted]
        chain.node, chain.adopted = node, chain.adopted + 1
        if chain.adopted < len(chain.tokens):
            alive.append(chain)
    return alive


def _feed(model, state: DraftState, tree, fed: list[int], nodes: torch.Tensor, node: int, tokens: list[int],
          base: int) -> torch.Tensor:
    """One draft forward under the tree mask: `nodes` (one level) on top of the cache, each seeing the cached slots
    of its ancestors (never a slot under node -1), and the `tokens` proposed below `node` as a chain after them, each
    seeing what `node` sees, `node` itself and the chain before it. Positions are the prefix plus the depth."""
    device = nodes.device
    slots = torch.tensor(fed, dtype=torch.long, device=device)
    visible = torch.cat([tree.ancestors[nodes][:, slots.clamp(min=0)] & (slots >= 0),
                         torch.eye(len(nodes), dtype=torch.bool, device=device)], dim=1)
    ids, depth = tree.tokens[nodes], tree.depth[nodes]
    if tokens:
        m = len(tokens)
        row = visible[nodes.tolist().index(node)].expand(m, -1)
        chain = torch.cat([row, torch.ones(m, m, dtype=torch.bool, device=device).tril()], dim=1)
        visible = torch.cat([visible, torch.zeros(len(nodes), m, dtype=torch.bool, device=device)], dim=1)
        visible = torch.cat([visible, chain])
        ids = torch.cat([ids, draft_input(tokens, state.vocab, device)[0]])
        depth = torch.cat([depth, tree.depth[node] + torch.arange(1, m + 1, device=device)])
    mask = tree_attention_mask(visible, base, model.dtype)
    return forward(model, ids.unsqueeze(0), state.cache, tree_position_ids(depth, base - 1), mask)


def _level_logits(frontier: torch.Tensor, ready: dict, fresh: torch.Tensor | None) -> torch.Tensor:
    """The frontier's logits, row by row: an adopted node's from its proposal, the others' from this forward."""
    nodes = frontier.tolist()
    if not any(node in ready for node in nodes):
        return fresh
    rows, i = [], 0
    for node in nodes:
        if node in ready:
            rows.append(ready.pop(node))
        else:
            rows.append(fresh[i])
            i += 1
    return torch.stack(rows)


@torch.no_grad()
def draft_tree(model, state: DraftState, expand: Expand, width: int, max_depth: int, select_frontier=None,
               stage: Stage | None = None) -> Drafted:
    """Grow a tree of at most `max_depth` levels below the root `state.pending[-1]`.

    `select_frontier(tree, new_nodes) -> nodes` (optional) picks which new nodes may get children: only those are fed
    to the draft, so a policy that already knows a node stays a leaf saves its draft compute. Default: all of them.

    `stage` (optional; staged speculation, module docstring) proposes tokens below one node of each forward, fed in
    that forward (after the pending tokens, or as a chain under the tree mask). A proposed token that the next
    level's `expand` picks below its node becomes that child, keys, values and logits already computed; a level
    whose frontier is all such children takes no forward. Proposed tokens the draft did not pick keep their cache
    slot under node -1: masked from every later forward, dropped by commit_draft.
    """
    device = model.device
    start = kvcache.cache_len(state.cache)
    tree = tree_mod.root(state.pending[-1], device=device)
    frontier = torch.zeros(1, dtype=torch.long, device=device)
    fed: list[int] = []
    chains: list[_Chain] = []
    ready: dict[int, torch.Tensor] = {}  # adopted nodes' logits, computed at their proposal's position
    anchor, proposed = _proposal(stage, tree, frontier, max_depth)
    pending = draft_input(state.pending + proposed, state.vocab, device)
    positions = torch.arange(start, start + pending.shape[1], device=device).unsqueeze(0)
    out = forward(model, pending, state.cache, position_ids=positions, logits_to_keep=1 + len(proposed))
    logits = _staged(out, 1, anchor, proposed, fed, chains)
    base = start + pending.shape[1] - len(proposed)  # the root's slot is base - 1, its position too
    forwards = 1
    sampling, drawn = state.sampling, []
    ids = getattr(model, "kept_ids", None)  # a trimmed output layer's token ids (models/vocab.py), else None
    for level in range(1, max_depth + 1):
        last = level == max_depth
        grown_from = len(tree)
        if sampling is None:
            tree, frontier = draft_level(tree, frontier, logits, expand, width, last, select_frontier, ids,
                                         state.vocab)
        else:
            # q over every token id (a trimmed draft's q is zero outside its kept ids)
            q = full_probs(model, sampling.probs(_shared(logits, state.vocab)), state.vocab)
            q = q.to(sampling.generator.device)
            draws = draw_without_replacement(q, width, sampling.generator)
            drawn.append((frontier.to(q.device), draws, q))
            parents, tokens, logp = expand(tree, frontier, *sampled_candidates(q, draws))
            real = logp > -math.inf  # slots past q's support are not tokens
            tree, frontier = grow(tree, (parents[real], tokens[real], logp[real]), last, select_frontier)
        chains = _adopt(chains, tree, grown_from, fed, ready)
        if frontier.numel() == 0:
            break
        nodes = frontier  # the nodes this level's forward must feed: those whose logits are not known yet
        if ready:
            nodes = frontier[torch.tensor([n not in ready for n in frontier.tolist()], device=device)]
        fresh = None
        if nodes.numel():
            anchor, proposed = _proposal(stage, tree, nodes, max_depth)
            out = _feed(model, state, tree, fed, nodes, anchor, proposed, base)
            fed.extend(nodes.tolist())
            fresh = _staged(out, len(nodes), anchor, proposed, fed, chains)
            forwards += 1
        logits = _level_logits(frontier, ready, fresh)
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


def _log(threshold: float) -> float:
    return math.log(threshold) if threshold > 0 else -math.inf


def choose(cum: torch.Tensor, threshold=0.0, room=None, keep=None, groups: torch.Tensor | None = None) -> tuple:
    """The selection rule, written once for live drafting, the replay and the supersets: among candidate children
    with cumulative log-probabilities `cum` (where `keep` is True; all when None), drop those below log(`threshold`)
    (compared in cum's dtype); when more remain than `room` (None: no budget), keep the `room` with the highest
    cumulative probability. Returns their indices as torch.nonzero(as_tuple=True) gives them, in row-major order:
    BFS/parent order when the rows are frontier nodes and the columns their candidates, best first.

    Batched (the replay: every policy at one start, one call per level): `groups` gives each row's selection,
    0..G-1 in row order (a group's rows contiguous), and `threshold` and `room` are then one per group; each group
    is chosen as if alone, by the very same comparisons and torch.topk calls."""
    if groups is None:
        ok = cum >= _log(threshold)
        threshold, room = [threshold], [room]
    else:
        logs = torch.tensor([[_log(t)] for t in threshold], dtype=cum.dtype, device=cum.device)
        ok = cum >= logs[groups]
    if keep is not None:
        ok &= keep
    index = torch.nonzero(ok, as_tuple=True)
    counts = [index[0].numel()] if groups is None else torch.bincount(groups[index[0]], minlength=len(room)).tolist()
    if all(r is None or n <= r for n, r in zip(counts, room)):
        return index
    values, parts, at = cum[index], [], 0
    for n, r in zip(counts, room):
        part = torch.arange(at, at + n, device=cum.device)
        if r is not None and n > r:
            part = torch.topk(values[at: at + n], r).indices.sort().values + at  # sorted: stay in BFS/parent order
        parts.append(part)
        at += n
    best = torch.cat(parts)
    return tuple(i[best] for i in index)


def select_children(tree, frontier, cand_logp, cand_tokens, keep=None, threshold: float = 0.0, max_nodes=None):
    """The children to add among the candidates (where `keep` is True; all when None), by `choose`: the threshold on
    cumulative probability, then the `max_nodes` budget of the whole tree (None: no budget). Returns (parents,
    tokens, logp) in BFS/parent order."""
    cum = tree.cum_logp[frontier].unsqueeze(1) + cand_logp
    rows, cols = choose(cum, threshold, None if max_nodes is None else max(max_nodes - tree.num_draft, 0), keep)
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
