"""Drafting the supersets that acceptance replay (bench.replay) reads, and the target continuations it follows.

`SupersetDrafter` drafts the superset below any start of one prompt's continuation (one start at a time on an
incremental draft cache, or `batch` starts per forward with `draft_supersets`); `greedy_continuation(s)` are the
target's greedy continuations (one prompt, or several as one batch); `live_replay` puts a drafter behind a Replay.
"""
from __future__ import annotations

import torch

from ..core import kvcache, tree as tree_mod
from ..core.draft import DraftState, choose, draft_input, draft_level, draft_tree
from ..core.forward import forward, kept_positions
from ..core.loop import generate
from ..core.mask import tree_attention_mask, tree_position_ids
from ..methods.base import Autoregressive
from .replay import Replay, Superset, SupersetSpec


class _Builder:
    """The expand/select_frontier pair that grows one superset, level by level with draft_tree or draft_supersets
    (rules 1-3 of bench.replay's docstring)."""

    def __init__(self, spec: SupersetSpec):
        self.spec = spec
        self.ranks = [0]
        self.chain = {0}
        self.fronts = [[0] for _ in spec.extras]  # per extra policy: the nodes it selected at the last level
        self.counts = [0 for _ in spec.extras]
        self.feed: set[int] = set()

    def expand(self, tree, frontier, cand_logp, cand_tokens):
        """Every candidate some covered policy may pick: each rule is `choose` as that policy's live drafting calls
        it (rule 1: the loosest threshold policy without a budget; rule 3: each extra policy on its own frontier)."""
        spec, level = self.spec, int(tree.depth[frontier[0]]) + 1
        f = frontier.tolist()
        cum = tree.cum_logp[frontier].unsqueeze(1) + cand_logp
        take = torch.zeros_like(cum, dtype=torch.bool)
        if level <= spec.max_depth:
            take[choose(cum[:, :spec.max_branch], spec.min_threshold)] = True
        if level <= spec.chain_depth:
            take[:, 0] |= torch.tensor([node in self.chain for node in f], device=cum.device)
        row_of = {node: r for r, node in enumerate(f)}
        picks = []
        for e, (branch, threshold, max_nodes, depth) in enumerate(spec.extras):
            if level > depth or not self.fronts[e]:
                picks.append([])
                continue
            rows_e = torch.tensor([row_of[node] for node in self.fronts[e]], device=cum.device)
            r, c = choose(cum[rows_e, :branch], threshold, max(max_nodes - self.counts[e], 0))
            take[rows_e[r], c] = True
            picks.append(list(zip(rows_e[r].tolist(), c.tolist())))
        rows, cs = torch.nonzero(take, as_tuple=True)
        base = len(tree)
        index = {rc: base + k for k, rc in enumerate(zip(rows.tolist(), cs.tolist()))}
        self.ranks.extend(cs.tolist())
        # a node below the loosest threshold can have no child above it: only rules 2 and 3 feed it
        passing = set(choose(cum[rows, cs], spec.min_threshold)[0].tolist())
        for k, (r, c) in enumerate(zip(rows.tolist(), cs.tolist())):
            node = base + k
            if c == 0 and f[r] in self.chain:
                self.chain.add(node)
            if (level < spec.max_depth and k in passing) or (node in self.chain and level < spec.chain_depth):
                self.feed.add(node)
        for e, chosen in enumerate(picks):
            self.fronts[e] = [index[rc] for rc in chosen]
            self.counts[e] += len(chosen)
            if level < spec.extras[e][3]:
                self.feed.update(self.fronts[e])
        return frontier[rows], cand_tokens[rows, cs], cand_logp[rows, cs]

    def select_frontier(self, tree, new_nodes):
        """Feed the draft only the nodes some rule may still give children (the others stay leaves)."""
        keep = [node for node in new_nodes.tolist() if node in self.feed]
        return torch.tensor(keep, dtype=torch.long, device=new_nodes.device)


def draft_supersets(model, cache, seq: list[int], roots: list[int], depths: list[int], spec: SupersetSpec,
                    vocab: int | None = None) -> tuple[list[Superset], int]:
    """The supersets below several roots of one token sequence, one batched draft forward per level for all of them.

    `roots` (increasing) are indices into `seq` of the root tokens; the tree below roots[i] has at most depths[i]
    levels. Every tree's nodes attend to seq[: roots[i] + 1] and their own ancestors only, at the positions a single
    tree would have (root index + depth), so each superset is the one `SupersetDrafter(batch=1)` drafts, up to float
    rounding (identical in the float32 tests). Where a real run pays about a fixed draft forward per level and
    start, this pays one per level for all `roots`: the replay's draft cost becomes the nodes' compute.
    Needs `cache` to hold at most seq[: roots[0]] (it is cropped to that); leaves it holding seq[: roots[-1] + 1].
    Returns (supersets, draft forwards made)."""
    device = model.device
    trimmed = getattr(model, "kept_ids", None)  # a trimmed output layer's token ids (models/vocab.py)

    def feed(tokens, at, keep):
        positions = torch.arange(at, at + len(tokens), device=device).unsqueeze(0)
        return forward(model, draft_input(tokens, vocab, device), cache, position_ids=positions, logits_to_keep=keep)

    kvcache.crop(cache, roots[0])  # a cache that holds more than the prefix before the first root
    have = kvcache.cache_len(cache)
    forwards = 0
    if have < roots[0]:  # the prefix before the first root: only its cache is needed
        feed(seq[have: roots[0]], have, 1)
        forwards += 1
    span = feed(seq[roots[0]: roots[-1] + 1], roots[0], 0)  # every root's logits, causally, in one forward
    forwards += 1
    base = roots[-1] + 1
    trees = [tree_mod.root(seq[r], device=device) for r in roots]
    builders = [_Builder(spec) for _ in roots]
    logits = [span[r - roots[0]].unsqueeze(0) for r in roots]
    frontiers = [torch.zeros(1, dtype=torch.long, device=device) for _ in roots]
    slots: list[dict[int, int]] = [{} for _ in roots]  # per tree: fed node -> its cache slot
    active = [i for i, d in enumerate(depths) if d >= 1]
    level = 0
    while active:
        level += 1
        fed_now = []
        for i in active:  # draft_tree's level step, tree by tree
            trees[i], frontier = draft_level(trees[i], frontiers[i], logits[i], builders[i].expand, spec.width,
                                             level == depths[i], builders[i].select_frontier, trimmed, vocab)
            if frontier.numel():
                frontiers[i] = frontier
                fed_now.append(i)
        active = fed_now
        if not active:
            break
        length = kvcache.cache_len(cache)
        queries = sum(len(frontiers[i]) for i in active)
        visible = torch.zeros(queries, length + queries, dtype=torch.bool, device=device)
        row = 0
        for i in active:
            f = frontiers[i]
            visible[row: row + len(f), : roots[i] + 1] = True
            if slots[i]:
                nodes = torch.tensor(list(slots[i]), dtype=torch.long, device=device)
                cols = torch.tensor(list(slots[i].values()), dtype=torch.long, device=device)
                visible[row: row + len(f), cols] = trees[i].ancestors[f][:, nodes]
            for k, node in enumerate(f.tolist()):
                slots[i][node] = length + row + k
            row += len(f)
        visible[:, length:] = torch.eye(queries, dtype=torch.bool, device=device)
        tokens = torch.cat([trees[i].tokens[frontiers[i]] for i in active]).unsqueeze(0)
        positions = torch.cat([tree_position_ids(trees[i].depth[frontiers[i]], roots[i]) for i in active], dim=1)
        out = forward(model, tokens, cache, positions, tree_attention_mask(visible, 0, model.dtype))
        forwards += 1
        row = 0
        for i in active:
            logits[i] = out[row: row + len(frontiers[i])]
            row += len(frontiers[i])
    kvcache.crop(cache, base)
    return [_superset(t, b) for t, b in zip(trees, builders)], forwards


def _superset(tree, builder: _Builder) -> Superset:
    return Superset(tree.tokens.cpu(), tree.parents.cpu(), torch.tensor(builder.ranks, dtype=torch.long),
                    tree.logp.float().cpu())


class SupersetDrafter:
    """Drafts the superset below the root of any start position of one prompt's greedy continuation, on one
    incremental draft cache (increasing starts only read the new tokens; a lower start crops the cache).

    `batch` > 1: a start not drafted yet is drafted together with the next batch - 1 starts (draft_supersets), whether
    or not a policy reaches them (most are reached: a grid's policies reach most positions); the rest wait in memory
    until asked for. Fewer, wider forwards pay where a forward's cost is mostly reading the weights (the bf16 draft
    on a CPU); where it grows with the rows multiplied (the int4 kernel) they do not (data/results/grid_batching.csv),
    so a sweep drafts a quantized draft's batches through its dense copy (bench.grid.replay_draft)."""

    def __init__(self, draft, prompt_ids, target_tokens, spec: SupersetSpec | None = None, vocab: int | None = None,
                 batch: int = 1):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.model = draft
        self.vocab = vocab  # the pair's shared vocabulary (ModelPair.shared_vocab), as speculate passes it
        self.prompt_len = len(prompt_ids)
        self.seq = [int(t) for t in prompt_ids] + [int(t) for t in target_tokens]
        self.n = len(target_tokens)
        self.spec = spec or SupersetSpec()
        self.batch = batch
        self.cache = kvcache.new_cache(draft)
        self.forwards = 0
        self.nodes = 0
        self.drafted = 0  # supersets drafted (with batch > 1, also starts no policy asked for)
        self.ready: dict[int, Superset] = {}

    def _depth(self, start: int) -> int:
        return min(self.spec.depth, self.n - start - 1)  # the deepest level any run of <= n tokens drafts here

    @torch.inference_mode()
    def __call__(self, start: int) -> Superset:
        if not 1 <= start < self.n:
            raise ValueError(f"start must be in [1, {self.n}), got {start}")
        if start in self.ready:
            return self.ready.pop(start)
        root_at = self.prompt_len + start - 1  # index of the root token in prompt + continuation
        if self._depth(start) < 1:
            return Superset(torch.tensor([self.seq[root_at]]), torch.tensor([-1]), torch.zeros(1, dtype=torch.long),
                            torch.zeros(1))
        if self.batch > 1:
            starts = [s for s in range(start, min(start + self.batch, self.n)) if self._depth(s) >= 1]
            supersets, forwards = draft_supersets(self.model, self.cache, self.seq,
                                                  [self.prompt_len + s - 1 for s in starts],
                                                  [self._depth(s) for s in starts], self.spec, self.vocab)
            self.forwards += forwards
            self.nodes += sum(len(s) for s in supersets)
            self.drafted += len(supersets)
            self.ready = dict(zip(starts, supersets))  # starts below this one will not be asked for again
            return self.ready.pop(start)
        kvcache.crop(self.cache, root_at)  # a lower start than the last one: back to its prefix
        have = kvcache.cache_len(self.cache)
        state = DraftState(self.cache, pending=self.seq[have: root_at + 1])
        if self.vocab is not None:
            state.vocab = self.vocab
        builder = _Builder(self.spec)
        drafted = draft_tree(self.model, state, builder.expand, self.spec.width, self._depth(start),
                             builder.select_frontier)
        kvcache.crop(self.cache, root_at + 1)
        self.forwards += drafted.forwards
        self.nodes += len(drafted.tree)
        self.drafted += 1
        return _superset(drafted.tree, builder)


def greedy_continuation(pair, prompt_ids, n: int) -> list[int]:
    """The target's greedy continuation of `n` tokens (EOS ignored): what every exact greedy method commits."""
    return generate(pair, list(prompt_ids), Autoregressive(), n, stop_at_eos=False).token_ids


@torch.inference_mode()
def greedy_continuations(pair, prompts, n: int) -> list[list[int]]:
    """The target's greedy continuations of `n` tokens (EOS ignored) of several prompts, decoded as one left-padded
    batch. On a CPU a decoding step's cost is mostly reading the weights, which a batch reads once for all its rows,
    so a grid's target units cost a fraction of one-at-a-time decoding. Each row's positions and attention are its
    own (the padding is masked), so the tokens are greedy_continuation's: identical in the float32 tests; in bf16
    another batch shape can flip a near-tie, as a tree verification's can."""
    prompts = [[int(t) for t in p] for p in prompts]
    if len(prompts) == 1 or n < 1:
        return [greedy_continuation(pair, p, n) for p in prompts]
    model, device = pair.target, pair.device
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = kvcache.new_cache(model)
    out = []
    for step in range(n):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=kept_positions(1, ids)).logits[:, -1]
        ids = logits.argmax(dim=-1, keepdim=True)
        out.append(ids)
        if step + 1 < n:
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            positions = positions[:, -1:] + 1
    return torch.cat(out, dim=1).tolist()


def live_replay(pair, prompt_ids, n: int, spec: SupersetSpec | None = None, target_tokens=None,
                batch: int = 1) -> Replay:
    """A Replay of `n` tokens that drafts its supersets with the pair's draft on demand (`batch` starts at a time)."""
    target = list(target_tokens) if target_tokens is not None else greedy_continuation(pair, prompt_ids, n)
    drafter = SupersetDrafter(pair.draft, prompt_ids, target[:n], spec, getattr(pair, "shared_vocab", None), batch)
    return Replay(prompt_ids, target[:n], drafter=drafter, spec=drafter.spec)
