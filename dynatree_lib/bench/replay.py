"""Acceptance replay: every round of a greedy fixed-tree or chain policy, without running the policy.

In greedy decoding a round of FixedTree(D, B, tau, N) or Linear(k) is fully determined by two things: the draft's
ranked candidates at the nodes the tree can reach, and the target's greedy continuation (a path is accepted while it
follows the target's argmax). Both depend only on the committed prefix, never on the policy, so

- one target pass (plain greedy decoding of n tokens) gives every round's acceptance, and
- one draft "superset" tree per start position holds the candidates of every policy in a whole grid:

    superset(c) = the nodes (below the root committed at position c) that some covered policy could draft:
      rule 1 (thresholds): rank < max_branch, cumulative draft probability >= min_threshold, depth <= max_depth;
      rule 2 (chain):      the draft's top-1 chain down to chain_depth (Linear(k), and any branch-1 tree);
      rule 3 (extras):     the exact candidates of each policy in `extras` (e.g. tau = 0 trees with a budget),
                           simulated level by level as fixed_expand selects them.

A covered policy's round is then a selection on the superset that replicates `core.draft.select_children` exactly
(rank < B, the threshold on cumulative log-probability in float32, the budget keeping the highest cumulative
probabilities with torch.topk in BFS order), cut at min(D, remaining - 1) levels as `speculate` cuts it; its
accepted length is the deepest selected node on the target's greedy path; the next round starts at
c + accepted + 1. Supersets are drafted lazily (only positions some policy reaches) and memoised.

Exactness: the candidates equal the real run's up to float rounding (the draft's cache is filled in other chunk
sizes than in the real run): identical in float32 tests; in bf16 a near-tie among the draft's top candidates can
order them differently, as it can between two real runs with different batch shapes.

Pure torch (no pandas): `Replay(prompt_ids, target_tokens, drafter=SupersetDrafter(...))`, `.rounds(method, n)`,
`replay_grid` (all policies in step, so supersets are drafted in increasing position with one incremental cache),
`Superset.pack/unpack` for storage.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import torch

from ..core import kvcache, tree as tree_mod
from ..core.draft import DraftState, _candidates, draft_tree
from ..core.forward import forward
from ..core.loop import generate
from ..core.mask import tree_attention_mask
from ..methods.base import Autoregressive, FixedTree, Linear, label

# (branch, threshold, max_nodes, depth): what fixed_expand needs to draft a round.
Params = tuple[int, float, int, int]


def params_of(method) -> Params:
    """The drafting parameters of a Linear or FixedTree method (draft_bits is the replay's draft, not a param)."""
    if isinstance(method, Linear):
        return (1, 0.0, method.k, method.k)
    if isinstance(method, FixedTree):
        return (method.branch, float(method.threshold), method.max_nodes, method.depth)
    raise TypeError(f"replay covers Linear and FixedTree, not {label(method)}")


def _log_threshold(threshold: float) -> float:
    return math.log(threshold) if threshold > 0 else -math.inf


@dataclass(frozen=True)
class SupersetSpec:
    """Which policies a superset covers (see the module docstring). The default covers the research's grid
    (D <= 8, B <= 4, tau >= 0.01, any budget) and Linear(k <= 8)."""

    max_depth: int = 8
    max_branch: int = 4
    min_threshold: float = 0.01
    chain_depth: int = 8
    extras: tuple[Params, ...] = ()  # exact (branch, threshold, max_nodes, depth) policies, e.g. tau = 0 trees

    def covers(self, params: Params) -> bool:
        branch, threshold, max_nodes, depth = params
        if branch <= self.max_branch and threshold >= self.min_threshold and depth <= self.max_depth:
            return True
        if branch == 1 and min(max_nodes, depth) <= self.chain_depth:
            return True
        return any(e[:3] == (branch, threshold, max_nodes) and depth <= e[3] for e in self.extras)

    @property
    def depth(self) -> int:
        return max([self.max_depth, self.chain_depth] + [e[3] for e in self.extras])

    @property
    def width(self) -> int:
        return max([self.max_branch] + [e[0] for e in self.extras])

    def to_dict(self) -> dict:
        return {"max_depth": self.max_depth, "max_branch": self.max_branch, "min_threshold": self.min_threshold,
                "chain_depth": self.chain_depth, "extras": [list(e) for e in self.extras]}

    @classmethod
    def from_dict(cls, d: dict) -> "SupersetSpec":
        return cls(d["max_depth"], d["max_branch"], d["min_threshold"], d["chain_depth"],
                   tuple((int(b), float(t), int(n), int(k)) for b, t, n, k in d.get("extras", ())))


@dataclass
class Superset:
    """The draft's candidate tree below one root, BFS order, siblings by rank; cumulative log-probabilities are
    recomputed level by level in float32 exactly as `core.tree.add_level` sums them."""

    tokens: torch.Tensor  # (n,) long; node 0 is the root
    parents: torch.Tensor  # (n,) long, -1 at the root
    rank: torch.Tensor  # (n,) long: the node's rank among the draft's candidates at its parent (0 = top-1)
    logp: torch.Tensor  # (n,) float32
    cum: torch.Tensor = field(init=False, repr=False)
    depth: list[int] = field(init=False, repr=False)
    children: list[list[int]] = field(init=False, repr=False)

    def __post_init__(self):
        parents = self.parents.tolist()
        n = len(parents)
        depth = [0] * n
        children: list[list[int]] = [[] for _ in range(n)]
        for i in range(1, n):
            depth[i] = depth[parents[i]] + 1
            children[parents[i]].append(i)
        self.depth, self.children = depth, children
        logp = self.logp.float()
        cum = torch.zeros(n, dtype=torch.float32)
        depth_t = torch.tensor(depth)
        for level in range(1, (max(depth) if n else 0) + 1):  # one vector add per level, as add_level does
            nodes = torch.nonzero(depth_t == level).flatten()
            cum[nodes] = cum[self.parents[nodes]] + logp[nodes]
        self.cum = cum
        self._ranks = self.rank.tolist()
        self._tokens = self.tokens.tolist()
        self._passes: dict[float, list[bool]] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def passes(self, threshold: float) -> list[bool]:
        """cum >= log(threshold), compared in float32 as select_children compares (memoised per threshold)."""
        if threshold not in self._passes:
            self._passes[threshold] = (self.cum >= _log_threshold(threshold)).tolist()
        return self._passes[threshold]

    def target_path(self, target: list[int]) -> list[int]:
        """Superset nodes along `target` (the target's greedy tokens after the root), level by level, as far as
        the superset follows them."""
        path, node = [], 0
        for token in target:
            node = next((ch for ch in self.children[node] if self._tokens[ch] == token), -1)
            if node < 0:
                break
            path.append(node)
        return path

    def pack(self) -> dict:
        return {"tokens": self.tokens.to(torch.int32), "parents": self.parents.to(torch.int16 if len(self) < 32767
                                                                                      else torch.int32),
                "rank": self.rank.to(torch.int8), "logp": self.logp.float()}

    @classmethod
    def unpack(cls, d: dict) -> "Superset":
        return cls(d["tokens"].long(), d["parents"].long(), d["rank"].long(), d["logp"].float())


@dataclass(frozen=True)
class Round:
    """One replayed round, with what the cost model needs: `widths` (draft nodes per level), `fed` (the widths the
    draft had to read: every level but the round's last), `root_tokens` (the draft's first forward: pending tokens
    plus root; 0 for a plain target step)."""

    start: int  # tokens committed before the round (the root is token start - 1 of the continuation)
    widths: tuple[int, ...]
    fed: tuple[int, ...]
    root_tokens: int
    accepted: int
    draft: bool = True  # False: remaining == 1, speculate takes a plain target step

    @property
    def nodes(self) -> int:
        return sum(self.widths)

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def committed(self) -> int:
        return self.accepted + 1

    def record(self) -> dict:
        """The fields `core.loop.speculate` puts in a trace record."""
        return {"nodes": self.nodes, "depth": self.depth, "accepted": self.accepted, "committed": self.committed}


def select(sup: Superset, params: Params, max_depth: int) -> list[list[int]]:
    """The nodes per level that fixed_expand(branch, threshold, max_nodes) drafts, as superset indices."""
    branch, threshold, max_nodes, _ = params
    ok = sup.passes(threshold)
    levels, frontier, drafted = [], [0], 0
    for _ in range(max_depth):
        cand = [ch for f in frontier for ch in sup.children[f] if sup._ranks[ch] < branch and ok[ch]]
        room = max(max_nodes - drafted, 0)
        if len(cand) > room:
            best = torch.topk(sup.cum[torch.tensor(cand, dtype=torch.long)], room).indices.sort().values
            cand = [cand[i] for i in best.tolist()]
        if not cand:
            break
        levels.append(cand)
        drafted += len(cand)
        frontier = cand
    return levels


class Replay:
    """Replayed rounds of greedy policies on one prompt: `target_tokens` is the target's greedy continuation (at
    least as long as any length asked for); supersets come from `supersets` {start: Superset} or are drafted on
    demand by `drafter(start) -> Superset` and memoised."""

    def __init__(self, prompt_ids, target_tokens, supersets=None, drafter=None, spec: SupersetSpec | None = None):
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.target = [int(t) for t in target_tokens]
        self.supersets: dict[int, Superset] = dict(supersets or {})
        self.drafter = drafter
        self.spec = spec or getattr(drafter, "spec", None) or SupersetSpec()
        self._rounds: dict[tuple, Round] = {}
        self._paths: dict[int, list[int]] = {}

    def superset(self, start: int) -> Superset:
        if start not in self.supersets:
            if self.drafter is None:
                raise KeyError(f"no superset stored for start {start} and no drafter to make one")
            self.supersets[start] = self.drafter(start)
        return self.supersets[start]

    def round(self, params: Params, start: int, n: int) -> Round:
        """The round that starts with `start` tokens committed in a run of `n` tokens."""
        remaining = n - start
        if remaining <= 1:  # speculate's plain target step: no draft at all
            return Round(start, (), (), 0, 0, False)
        max_depth = min(params[3], remaining - 1)
        key = (params[:3], start, max_depth)
        if key not in self._rounds:
            sup = self.superset(start)
            levels = select(sup, params, max_depth)
            if start not in self._paths:
                self._paths[start] = sup.target_path(self.target[start: start + self.spec.depth])
            path = self._paths[start]
            accepted = 0
            for level, nodes in enumerate(levels):
                if level < len(path) and path[level] in nodes:
                    accepted = level + 1
                else:
                    break
            widths = tuple(len(nodes) for nodes in levels)
            fed = widths[: max_depth - 1]  # draft_tree feeds every level but the round's deepest allowed one
            self._rounds[key] = Round(start, widths, fed, 0, accepted)
        return self._rounds[key]

    def rounds(self, method, n: int) -> list[Round]:
        """Every round of `generate(pair, prompt, method, n, stop_at_eos=False)` in greedy decoding."""
        return replay_grid(self, [method], [n])[(label(method), n)]

    def check(self, params: Params, n: int) -> None:
        if not self.spec.covers(params):
            raise ValueError(f"policy {params} (branch, threshold, max_nodes, depth) is not covered by {self.spec}")
        if n > len(self.target):
            raise ValueError(f"length {n} exceeds the stored target continuation ({len(self.target)} tokens)")


def _with_roots(replay: Replay, rounds: list[Round]) -> list[Round]:
    """Fill in each round's first draft forward: the prompt plus root in round 1, else the root plus the accepted
    node of the previous round's deepest level when that level was never fed (draft_tree's pending tokens)."""
    out, pending = [], len(replay.prompt_ids) + 1
    for r in rounds:
        if r.draft:
            out.append(Round(r.start, r.widths, r.fed, pending, r.accepted, True))
            pending = 2 if r.accepted > len(r.fed) else 1
        else:  # the draft only queues the committed tokens
            out.append(r)
            pending += r.committed
    return out


def replay_grid(replay: Replay, methods, lengths) -> dict[tuple[str, int], list[Round]]:
    """{(label, n): rounds} for every method and length, advancing all runs in step (lowest start first), so a
    drafter sees increasing start positions and reuses its cache."""
    runs = {}
    heap = []
    for i, m in enumerate(methods):
        p = params_of(m)
        for n in lengths:
            replay.check(p, n)
            runs[(label(m), n)] = []
            if n > 1:
                heap.append((1, i, n, p))
    heapq.heapify(heap)
    while heap:
        start, i, n, p = heapq.heappop(heap)
        r = replay.round(p, start, n)
        runs[(label(methods[i]), n)].append(r)
        if start + r.committed < n:
            heapq.heappush(heap, (start + r.committed, i, n, p))
    return {k: _with_roots(replay, v) for k, v in runs.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Drafting supersets


class _Builder:
    """The expand/select_frontier pair that grows one superset with draft_tree (rules 1-3 of the module docstring)."""

    def __init__(self, spec: SupersetSpec):
        self.spec = spec
        self.ranks = [0]
        self.chain = {0}
        self.fronts = [[0] for _ in spec.extras]  # per extra policy: the nodes it selected at the last level
        self.counts = [0 for _ in spec.extras]
        self.feed: set[int] = set()

    def expand(self, tree, frontier, cand_logp, cand_tokens):
        spec, level = self.spec, int(tree.depth[frontier[0]]) + 1
        f = frontier.tolist()
        cum = tree.cum_logp[frontier].unsqueeze(1) + cand_logp
        cols = torch.arange(cum.shape[1], device=cum.device).unsqueeze(0)
        take = torch.zeros_like(cum, dtype=torch.bool)
        if level <= spec.max_depth:
            take |= (cols < spec.max_branch) & (cum >= _log_threshold(spec.min_threshold))
        if level <= spec.chain_depth:
            take[:, 0] |= torch.tensor([node in self.chain for node in f], device=cum.device)
        row_of = {node: r for r, node in enumerate(f)}
        picks = []
        for e, (branch, threshold, max_nodes, depth) in enumerate(spec.extras):
            if level > depth or not self.fronts[e]:
                picks.append([])
                continue
            rows_e = torch.tensor([row_of[node] for node in self.fronts[e]], device=cum.device)
            sub = cum[rows_e, :branch]  # the exact candidates select_children sees for this policy
            r, c = torch.nonzero(sub >= _log_threshold(threshold), as_tuple=True)
            take[rows_e[r], c] = True
            room = max(max_nodes - self.counts[e], 0)
            if r.numel() > room:
                best = torch.topk(sub[r, c], room).indices.sort().values
                r, c = r[best], c[best]
            picks.append(list(zip(rows_e[r].tolist(), c.tolist())))
        rows, cs = torch.nonzero(take, as_tuple=True)
        base = len(tree)
        index = {rc: base + k for k, rc in enumerate(zip(rows.tolist(), cs.tolist()))}
        self.ranks.extend(cs.tolist())
        new_cum = cum[rows, cs].tolist()
        feed_min = _log_threshold(spec.min_threshold)
        for k, (r, c) in enumerate(zip(rows.tolist(), cs.tolist())):
            node = base + k
            if c == 0 and f[r] in self.chain:
                self.chain.add(node)
            if (level < spec.max_depth and new_cum[k] >= feed_min) or (node in self.chain and level < spec.chain_depth):
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
    width = spec.width
    trimmed = getattr(model, "draft_vocab", None)  # a trimmed output layer's token ids (models/vocab.py)
    clamp = (lambda ids: [min(t, vocab - 1) for t in ids]) if vocab is not None else (lambda ids: ids)

    def feed(tokens, at, keep):
        ids = torch.tensor([clamp(tokens)], dtype=torch.long, device=device)
        positions = torch.arange(at, at + len(tokens), device=device).unsqueeze(0)
        logits = forward(model, ids, cache, position_ids=positions, logits_to_keep=keep)
        return logits[..., :vocab] if vocab is not None and logits.shape[-1] > vocab else logits

    have = kvcache.cache_len(cache)
    if have > roots[0]:
        kvcache.crop(cache, roots[0])
        have = roots[0]
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
            cand_logp, cand_tokens = _candidates(logits[i], width, trimmed)
            parents, tokens, logp = builders[i].expand(trees[i], frontiers[i], cand_logp, cand_tokens)
            if parents.numel() == 0:
                continue
            n = len(trees[i])
            trees[i] = tree_mod.add_level(trees[i], parents, tokens, logp)
            if level == depths[i]:
                continue
            frontier = builders[i].select_frontier(trees[i], torch.arange(n, len(trees[i]), device=device))
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
        positions = torch.cat([trees[i].depth[frontiers[i]] + roots[i] for i in active]).unsqueeze(0)
        out = forward(model, tokens, cache, positions, tree_attention_mask(visible, 0, model.dtype))
        if vocab is not None and out.shape[-1] > vocab:
            out = out[..., :vocab]
        forwards += 1
        row = 0
        for i in active:
            logits[i] = out[row: row + len(frontiers[i])]
            row += len(frontiers[i])
    kvcache.crop(cache, base)
    return [Superset(t.tokens.cpu(), t.parents.cpu(), torch.tensor(b.ranks, dtype=torch.long), t.logp.float().cpu())
            for t, b in zip(trees, builders)], forwards


class SupersetDrafter:
    """Drafts the superset below the root of any start position of one prompt's greedy continuation, on one
    incremental draft cache (increasing starts only read the new tokens; a lower start crops the cache).

    `batch` > 1: a start not drafted yet is drafted together with the next batch - 1 starts (draft_supersets), whether
    or not a policy reaches them (most are reached: a grid's policies reach most positions); the rest wait in memory
    until asked for. Fewer, wider forwards: on a CPU a draft forward's fixed cost dominates a small tree's."""

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
        have = kvcache.cache_len(self.cache)
        if have > root_at:
            kvcache.crop(self.cache, root_at)
            have = root_at
        state = DraftState(self.cache, pending=self.seq[have: root_at + 1])
        if self.vocab is not None:
            state.vocab = self.vocab
        builder = _Builder(self.spec)
        drafted = draft_tree(self.model, state, builder.expand, self.spec.width, self._depth(start),
                             builder.select_frontier)
        kvcache.crop(self.cache, root_at + 1)
        self.forwards += drafted.forwards
        tree = drafted.tree
        self.nodes += len(tree)
        self.drafted += 1
        return Superset(tree.tokens.cpu(), tree.parents.cpu(), torch.tensor(builder.ranks, dtype=torch.long),
                        tree.logp.float().cpu())


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
                       use_cache=True, logits_to_keep=1).logits[:, -1]
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
