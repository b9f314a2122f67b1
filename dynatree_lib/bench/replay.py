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

A covered policy's round is then the selection that live drafting makes, by the same function
(`core.draft.choose`, which select_children calls) on the superset's candidates of rank < B, level by level, cut
at min(D, remaining - 1) levels as `speculate` cuts it; its accepted length is the deepest selected node on the
target's greedy path; the next round starts at c + accepted + 1. Supersets are drafted lazily (only positions some
policy reaches) and memoised.

Exactness: the candidates equal the real run's up to float rounding (the draft's cache is filled in other chunk
sizes than in the real run): identical in float32 tests; in bf16 a near-tie among the draft's top candidates can
order them differently, as it can between two real runs with different batch shapes.

Pure torch (no pandas): `Replay(prompt_ids, target_tokens, drafter=SupersetDrafter(...))`, `.rounds(method, n)`,
`replay_grid` (all policies in step, so supersets are drafted in increasing position with one incremental cache),
`Superset.pack/unpack` for storage. The drafting (SupersetDrafter, live_replay) is in bench.supersets.
"""
from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass, field

import torch

from ..core.draft import choose
from ..methods.base import FixedTree, Linear, label

# (branch, threshold, max_nodes, depth): what fixed_expand needs to draft a round.
Params = tuple[int, float, int, int]


def params_of(method) -> Params:
    """The drafting parameters of a Linear or FixedTree method (draft_bits is the replay's draft, not a param)."""
    if isinstance(method, Linear):
        return (1, 0.0, method.k, method.k)
    if isinstance(method, FixedTree):
        return (method.branch, float(method.threshold), method.max_nodes, method.depth)
    raise TypeError(f"replay covers Linear and FixedTree, not {label(method)}")


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
        return {**asdict(self), "extras": [list(e) for e in self.extras]}

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
    # by node and rank: the child's index (kids, -1: no such child) and its cum (kid_cum, NaN: no such child, so
    # that no threshold keeps it)
    kids: torch.Tensor = field(init=False, repr=False)
    kid_cum: torch.Tensor = field(init=False, repr=False)

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
        kids = torch.full((n, int(self.rank.max()) + 1 if n > 1 else 0), -1, dtype=torch.long)
        kids[self.parents[1:], self.rank[1:]] = torch.arange(1, n)
        self.kids, self.kid_cum = kids, cum[kids.clamp(min=0)].masked_fill(kids < 0, float("nan"))
        self._tokens = self.tokens.tolist()

    def __len__(self) -> int:
        return len(self._tokens)

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


def select(sup: Superset, policies: list[tuple[Params, int]], path: list[int]) -> list[tuple[tuple[int, ...], int]]:
    """For each (params, max_depth): the round that fixed_expand(branch, threshold, max_nodes) drafts in at most
    max_depth levels, as (nodes per level, accepted length: the levels whose selection holds the superset's
    `path` node). `choose` picks among the candidates of rank < branch below each policy's frontier, as
    select_children hands it a live tree's; all the policies advance together, one group each of one batched
    `choose` per level."""
    thresholds = [params[1] for params, _ in policies]
    within = torch.arange(sup.kids.shape[1]) < torch.tensor([[params[0]] for params, _ in policies])  # ranks < B
    widths: list[list[int]] = [[] for _ in policies]
    drafted, accepted = [0] * len(policies), [0] * len(policies)
    groups = torch.tensor([j for j, (_, depth) in enumerate(policies) if depth >= 1], dtype=torch.long)  # roots
    nodes, level = torch.zeros_like(groups), 0
    while nodes.numel():
        level += 1
        rooms = [max(params[2] - count, 0) for (params, _), count in zip(policies, drafted)]
        rows, cols = choose(sup.kid_cum[nodes], thresholds, rooms, within[groups], groups)
        nodes, groups = sup.kids[nodes[rows], cols], groups[rows]
        owners, on_path = groups.tolist(), path[level - 1] if level <= len(path) else -1
        for j, node in zip(owners, nodes.tolist()):
            if len(widths[j]) < level:  # the policy's first node at this level
                widths[j].append(0)
            widths[j][-1] += 1
            if node == on_path and accepted[j] == level - 1:  # every level so far held the path's node
                accepted[j] = level
        for j in set(owners):
            drafted[j] += widths[j][-1]
        deeper = [policies[j][1] > level for j in owners]
        if not all(deeper):
            keep = torch.tensor(deeper, dtype=torch.bool)
            nodes, groups = nodes[keep], groups[keep]
    return [(tuple(w), a) for w, a in zip(widths, accepted)]


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

    def rounds_at(self, start: int, runs: list[tuple[Params, int]]) -> list[Round]:
        """The rounds that start with `start` tokens committed, one per (params, n): a policy's run of n tokens."""
        depths = [min(params[3], n - start - 1) for params, n in runs]  # speculate cuts a round at remaining - 1
        todo = {(params[:3], depth): (params, depth) for (params, _), depth in zip(runs, depths)
                if depth >= 1 and (params[:3], start, depth) not in self._rounds}
        if todo:
            sup = self.superset(start)
            if start not in self._paths:
                self._paths[start] = sup.target_path(self.target[start: start + self.spec.depth])
            for (key, depth), (widths, accepted) in zip(todo, select(sup, list(todo.values()), self._paths[start])):
                fed = widths[: depth - 1]  # draft_tree feeds every level but the round's deepest allowed one
                self._rounds[(key, start, depth)] = Round(start, widths, fed, 0, accepted)
        # remaining == 1 (depth 0): speculate's plain target step, no draft at all
        return [self._rounds[(params[:3], start, depth)] if depth >= 1 else Round(start, (), (), 0, 0, False)
                for (params, _), depth in zip(runs, depths)]

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
    runs, labels, heap = {}, [label(m) for m in methods], []
    for i, m in enumerate(methods):
        p = params_of(m)
        for n in lengths:
            replay.check(p, n)
            runs[(labels[i], n)] = []
            if n > 1:
                heap.append((1, i, n, p))
    heapq.heapify(heap)
    while heap:  # every run whose next round starts at the lowest start, together
        start, batch = heap[0][0], []
        while heap and heap[0][0] == start:
            batch.append(heapq.heappop(heap))
        for (_, i, n, p), r in zip(batch, replay.rounds_at(start, [(p, n) for _, _, n, p in batch])):
            runs[(labels[i], n)].append(r)
            if start + r.committed < n:
                heapq.heappush(heap, (start + r.committed, i, n, p))
    return {k: _with_roots(replay, v) for k, v in runs.items()}
