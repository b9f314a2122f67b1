"""DynaTree: a tree shaped by confidence and by what a level costs on this machine, learned while decoding (the
library's default method; it was DynaTree's phase 4).

The research's phases (AdaptiveTree) fix the depth (base_depth, extended to max_depth only for near-certain
paths). With a cheap draft that is the wrong trade: on predictable text the draft is right twenty tokens in a row,
and a depth cap of 8 throws most of that away, while on hard text even depth 5 drafts tokens nobody will accept.
DynaTree asks, level by level, whether drafting another level pays for itself:

    a child's worth    q(child) = q(parent) * f(p)      the chance the target accepts the whole path down to it;
                                                        p: the draft's probability of the child's token,
                                                        f(p): how often the target accepted draft tokens of that
                                                        probability so far in this generation (root: q = 1)
    keep a child       if q(child) >= rate * (verify_per_node + draft_per_node)   the tokens its time could earn
    draft a level      if abar * sum q(frontier) >= rate * draft_level(width)

where `rate` is the tokens per second decoding achieves now, `verify_per_node` the seconds a verified node adds,
`draft_level(width)` the seconds of a draft level that feeds `width` nodes (a line fitted to the levels drafted so
far; `draft_per_node` its slope: a node that stays in the tree is also fed to the next level's draft forward, and on
a CPU an int4 draft's level costs about as much more per node as the verification does), and `abar` how often a
node's first child is accepted. f is a calibration
table over ten bins of p (prior f(p) = p): the draft's own probability is a poor measure of acceptance (an int4
draft is often right at p = 0.6, and a chain of such tokens is worth far more than the product of the p's says), so
the table is learned from every child whose parent was accepted. The tree is a long chain while the target keeps
agreeing (one child, q decaying slowly, cheap levels) and widens where the draft is unsure (phase 1's branch rule:
min_branch children above high_conf, max_branch below low_conf); both limits move with the hardware: a level of
the bf16 draft, which costs most of a target step on a CPU, needs far more worth than one of an int4 draft. Costs
and rate are running averages over the rounds of this generation (the first round, where the draft reads the whole
prompt, is left out), starting from priors that suit a cheap draft; max_depth is only a hard cap.

Nothing here changes what is committed: the target verifies whatever tree is drafted, so output stays exact.
When sampling, the costs and the rate stay at their priors (f and abar, which depend on the models alone, are still
learned), so that a seed still reproduces a run: wall-clock times must not decide which draws are made.
Each round's trace adds `abar`, `rate_x_level` (rate * draft_per_level, in tokens) and `node_floor`
(rate * verify_per_node).

`staged=True` (the default with an unquantized draft, DynaTree's docstring) drafts the same kind of tree by staged
speculation (Spector and Re, 2023; core.draft): the draft's own draft is prompt lookup. Before each draft forward,
the tokens that followed the latest earlier occurrence of the last 2-3 tokens of the most probable fed node's
context (methods.ngram.lookup over the prompt, the text so far and the node's path) are fed in that forward, below
that node; where DynaTree's level rule then picks them, the next levels need no forward of their own. Each proposed
position costs what a fed node costs (draft_per_node), so a proposal is cut to its first tokens that pay for their
rows (LookupStage.paying: learned per position, how often a proposed token was adopted and how often its level then
needed no forward); a level with no forward is not a measurement of a level's cost. The trace adds `stage_tokens`
(tokens proposed in the round).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core.checks import _check_bool, _check_draft_options, _check_int
from ..core.loop import Run
from .adaptive import branch_children, branches, budget_spent, check_branch_rule
from .base import TreeDrafter, Speculative, retired

# What DynaTree() used to accept for its research phases: a phase of 1-3 is AdaptiveTree now, and these settings,
# which the shaped tree never read, are accepted with a DeprecationWarning and ignored.
_UNREAD = ("phase", "base_depth", "stop_threshold", "extend_threshold", "learning_rate", "target_acceptance", "window",
           "threshold", "pruning")


def _research_phase(params: dict) -> bool:
    phase = params.get("phase", 4)
    if phase not in (1, 2, 3, 4) or isinstance(phase, bool):
        raise ValueError(f"phase must be 1, 2 or 3 (AdaptiveTree) or 4 (DynaTree), got {phase!r}")
    return phase != 4


@retired(lambda params: ("AdaptiveTree", ()) if _research_phase(params) else ("DynaTree", _UNREAD))
@dataclass(frozen=True)
class DynaTree(Speculative):
    """The confidence-and-cost shaped tree (module docstring): phase 1's branch rule (min_branch children where the
    draft's top-1 probability is above high_conf, max_branch below low_conf, default_branch between), while
    confidence and cost set the depth and which nodes stay; max_depth is only a hard cap and max_nodes a node budget
    (node_budget=False lifts it). Why it is the default: the speed table (benchmarks/goal.py, data/results/speed.csv,
    held-out prompts of three kinds) puts it ahead of AdaptiveTree and of transformers' assisted generation with the
    same draft, level with HardwareAware; the benchmarks chapter gives the numbers.
    `staged=True` checks prompt-lookup proposals in the draft's forwards (module docstring): the same rules grow
    the tree, often in fewer draft forwards. Left unset, it is on for an unquantized draft and off for an int8/int4
    one: the speed table measures staging at 1.17x the unstaged speed with the bf16 draft, whose extra rows cost
    about 5% of a level, and 1.00x with the int4 draft, whose rows cost 27-44% of one (book chapter 06).

    `DynaTree(phase=1..3, ...)` still works, with a DeprecationWarning: it returns AdaptiveTree(phase=..., ...)."""

    high_conf: float = 0.9
    low_conf: float = 0.4
    min_branch: int = 1
    default_branch: int = 2
    max_branch: int = 3
    max_depth: int = 32
    max_nodes: int = 128
    node_budget: bool = True
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (models/vocab.py)
    staged: bool | None = None  # staged speculation (the draft checks prompt-lookup proposals in its forwards);
    # None: on for an unquantized draft (docstring)
    draft_context: int | None = None  # W: the draft reads only the prompt's last W tokens, a shorter draft prefill
    # (the target reads all of them: the output is unchanged); None: the whole prompt

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        check_branch_rule(self)
        _check_int("max_depth", self.max_depth, 1)
        if self.draft_context is not None:
            _check_int("draft_context", self.draft_context, 1)
        if self.staged is None:
            object.__setattr__(self, "staged", self.draft_bits is None)
        for name in ("node_budget", "staged"):
            _check_bool(name, getattr(self, name))

    def drafter(self, run: Run) -> "ShapedDrafter":
        shaped = Shaped(self, lambda p: branches(p, self.high_conf, self))
        stage = LookupStage(run, shaped) if self.staged else None
        return ShapedDrafter(shaped, run, self.max_branch, self.max_depth, stage)

_EMA = 0.2  # weight of the newest round in every running average
_PRIOR_LEVEL_TOKENS = 0.4  # rate * draft_per_level before anything is measured (an int4 draft on a CPU)
_PRIOR_NODE_FLOOR = 0.04  # rate * verify_per_node before anything is measured
_NODE_SLOPE = 0.03  # prior: verify seconds per extra node, as a fraction of a one-token verify
_DRAFT_NODE_SLOPE = 0.2  # prior: draft seconds per extra node of a level, as a fraction of a one-node level (the
# int4 draft on 2 CPU cores: 27/43/125 ms for 1/4/16 nodes, data/results/vocab_costs.csv; the bf16 draft ~0.05)
_LEVEL_MARGIN = 0.7  # a level is drafted when it is expected to return 70% of its cost in tokens: the
# levels after it are an option the myopic rule does not count (0.7 beat 1.0 on 3 prompts, benchmarks/goal.py --skip)
_FLOOR_RANGE = (0.005, 0.5)
_BINS = 10
_PRIOR_WEIGHT = 4.0  # the prior f(p) = p counts as this many observations per bin
_DECAY = 0.995  # per observation: the calibration follows the text as it changes
_STAGE_TOKENS = 8  # the longest proposal fed per draft forward (PromptLookup's k)
_STAGE_NGRAM = (2, 3)  # the n-grams matched, shortest and longest: a match on one token proposes what the draft
# mostly rejects, and every proposed token is a fed position
_STAGE_PRIOR = 0.5  # the chance a proposed token is adopted before any was tried (a proposal is tried at first)
_STAGE_DRIFT = 0.02  # per proposal: how fast an unfed position's chance returns to the prior


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1 - _EMA) * old + _EMA * new


class _Line:
    """y = a + b x by exponentially weighted least squares; until the x seen spread enough (variance `spread`) to
    fit a slope, the slope is `prior` times the intercept (a node costs that fraction of a one-node forward)."""

    def __init__(self, prior: float, spread: float = 4.0):
        self.prior, self.spread = prior, spread
        self.mx = self.my = self.mxx = self.mxy = None

    def add(self, x: float, y: float) -> None:
        self.mx, self.my = _ema(self.mx, x), _ema(self.my, y)
        self.mxx, self.mxy = _ema(self.mxx, x * x), _ema(self.mxy, x * y)

    def slope(self) -> float | None:
        if self.mx is None:
            return None
        var = self.mxx - self.mx**2
        fitted = (self.mxy - self.mx * self.my) / var if var > self.spread else None
        prior = self.prior * self.my / (1 + self.prior * self.mx)
        return prior if fitted is None else max(fitted, 0.25 * prior)

    def at(self, x: float) -> float | None:
        """The fitted y at x (never below a quarter of the mean: a short fit must not promise free forwards)."""
        if self.mx is None:
            return None
        return max(self.my + self.slope() * (x - self.mx), 0.25 * self.my)


class AcceptanceTable:
    """f(p): the observed rate at which the target accepts a draft token of draft probability p, given its parent
    was accepted; ten bins, discounted counts, shrunk towards f(p) = p."""

    def __init__(self):
        self.mid = (torch.arange(_BINS, dtype=torch.float32) + 0.5) / _BINS
        self.hits = torch.zeros(_BINS)
        self.trials = torch.zeros(_BINS)

    def bins(self, p: torch.Tensor) -> torch.Tensor:
        return (p.float().cpu() * _BINS).long().clamp(0, _BINS - 1)

    def table(self) -> torch.Tensor:
        return (self.hits + _PRIOR_WEIGHT * self.mid) / (self.trials + _PRIOR_WEIGHT)

    def f(self, p: torch.Tensor) -> torch.Tensor:
        return self.table()[self.bins(p)].to(p.device)

    def observe(self, p: float, accepted: bool) -> None:
        b = min(int(p * _BINS), _BINS - 1)
        self.hits *= _DECAY
        self.trials *= _DECAY
        self.trials[b] += 1
        self.hits[b] += float(accepted)


class Shaped:
    """One generation's DynaTree state: running costs, rate and calibration, and this round's tree bookkeeping."""

    def __init__(self, method, branches):
        self.method = method
        self.branches = branches  # phase 1's rule: children per node from its top-1 probability
        self.acceptance = AcceptanceTable()
        self.abar = 0.8
        self.rate = None
        self.verify = _Line(_NODE_SLOPE)  # verify seconds = intercept + slope * nodes, fitted as the rounds come
        # draft level seconds = intercept + slope * nodes fed; a level feeds 1-3 nodes, so a small spread suffices
        self.draft = _Line(_DRAFT_NODE_SLOPE, spread=0.25)
        self.rounds = 0
        self.timed = True  # False while sampling: decisions may depend on the models only, never on the clock
        self.run = None
        self._new_round()

    def _new_round(self) -> None:
        self.logq = torch.zeros(1)  # log worth of every node of this round's tree, in tree order (root: 0)
        self.parent: list[int] = [-1]
        self.token: list[int] = [-1]
        self.prob: list[float] = [1.0]
        # Between two expand calls of a round lies exactly one level's draft forward (and its bookkeeping): the
        # marginal cost of a level. A round's draft_s / depth would also spread the root's forward, which reads the
        # tokens the draft has not seen yet, over the levels, and so make a shallow tree look costly per level.
        self.last_expand: float | None = None
        self.level_times: list[tuple[int, float]] = []  # (nodes the level's forward fed, seconds)
        # Staged: the positions the next level's forward feeds, nodes and proposals (0 until LookupStage feeds some:
        # none, the level's logits were all known). None when unstaged: the frontier is what a level feeds.
        self.level_fed: int | None = None
        self.free_levels: set[int] = set()  # depths whose nodes' children came without a forward (staged)

    def seed(self, costs, rate: float) -> None:
        """Start from a machine's calibrated cost curves (planning.calibrate.Costs) and an expected rate instead of
        the priors: the lines hold those points from the first round on, and the measured rounds move them."""
        for width in (1, 2, 3, 4):
            self.draft.add(width, costs.draft(width))
        for nodes in (1, 4, 8, 16, 32):
            self.verify.add(nodes, costs.verify(1 + nodes))
        self.rate = rate

    # --- the decisions -----------------------------------------------------------------------------------------
    def level_tokens(self, width: int = 1) -> float:
        """rate * draft_level(width): the tokens another level feeding `width` nodes must be expected to add to pay
        for itself."""
        if self.rate is None or self.draft.mx is None:
            return _PRIOR_LEVEL_TOKENS * (1 + _DRAFT_NODE_SLOPE * (width - 1))
        return self.rate * self.draft.at(width)

    def node_floor(self) -> float:
        """rate * (verify_per_node + draft_per_node): the least worth of a node that is worth keeping."""
        if self.rate is None or self.verify.slope() is None:
            return _PRIOR_NODE_FLOOR
        per_node = self.verify.slope() + (self.draft.slope() or 0.0)
        return min(max(self.rate * per_node, _FLOOR_RANGE[0]), _FLOOR_RANGE[1])

    def child_floor(self, tree) -> float:
        """The least worth of a child drafted into `tree` now (HardwareAware's ablation lifts it at the root)."""
        return self.node_floor()

    def expand(self, tree, frontier, cand_logp, cand_tokens):
        m = self.method
        cand_p = cand_logp.exp().float()
        top1 = cand_p[:, 0]
        top1.tolist()  # waits for the level's forward (on a GPU too) before the clock is read
        now = time.perf_counter()
        fed = len(frontier) if self.level_fed is None else self.level_fed
        if self.last_expand is not None and fed:
            self.level_times.append((fed, now - self.last_expand))
        elif self.last_expand is not None:  # every node of the frontier was adopted: this level took no forward
            self.free_levels.add(int(tree.depth[frontier[0]]))
        self.last_expand = now
        self.level_fed = 0 if m.staged else None
        parent_q = self.logq[frontier.cpu()].exp().to(cand_p.device)
        worth = parent_q.unsqueeze(1) * self.acceptance.f(cand_p) >= self.child_floor(tree)
        parents, tokens, logp = branch_children(tree, frontier, cand_logp, cand_tokens, self.branches(top1), m,
                                                keep=worth)
        p = logp.exp().float()
        child_logq = self.logq[parents.cpu()] + self.acceptance.f(p).cpu().clamp(min=1e-6).log()
        self.logq = torch.cat([self.logq, child_logq])
        self.parent += parents.tolist()
        self.token += tokens.tolist()
        self.prob += p.tolist()
        return parents, tokens, logp

    def select_frontier(self, tree, nodes):
        if budget_spent(tree, self.method):
            return nodes[:0]
        q = self.logq[nodes.cpu()].exp()
        alive = q * self.abar >= self.node_floor()  # a node whose best child cannot pass the floor stays a leaf
        width = int(alive.sum())
        if width == 0 or float(q[alive].sum()) * self.abar < _LEVEL_MARGIN * self.level_tokens(width):
            return nodes[:0]
        return nodes[alive.to(nodes.device)]

    # --- learning ----------------------------------------------------------------------------------------------
    def summary(self) -> dict:
        table = self.acceptance.table()
        return {"final_abar": self.abar, "final_level_tokens": self.level_tokens(),
                "final_node_floor": self.node_floor(), "final_accept_at_p0.5": float(table[_BINS // 2]),
                "final_accept_at_p0.95": float(table[-1])}

    def _learn_acceptance(self, committed: list[int]) -> None:
        """Every child of an accepted node was a trial: accepted if its token is the target's next token."""
        children: dict[int, list[int]] = {}
        for node in range(1, len(self.parent)):
            children.setdefault(self.parent[node], []).append(node)
        node = 0
        for target_token in committed:
            kids = children.get(node, [])
            if not kids:
                return
            matched = next((k for k in kids if self.token[k] == target_token), None)
            for rank, kid in enumerate(kids):
                self.acceptance.observe(self.prob[kid], kid == matched)
                if rank == 0:
                    self.abar = _ema(self.abar, float(kid == matched))
            if matched is None:
                return
            node = matched

    def notes(self) -> dict:
        return dict(abar=self.abar, rate_x_level=self.level_tokens(), node_floor=self.node_floor())

    def learn(self, record: dict) -> None:
        levels = self.level_times
        if self.run is not None and not self.run.finished and record["depth"] > 0:
            self._learn_acceptance(self.run.tokens[len(self.run.tokens) - record["committed"]:])
        self._new_round()
        self.rounds += 1
        if self.rounds == 1 or not self.timed:
            return  # the first round's draft read the whole prompt: its time says nothing about a level
        if record["round_s"] > 0:
            self.rate = _ema(self.rate, record["committed"] / record["round_s"])
        self.verify.add(record["nodes"], record["verify_s"])
        for width, seconds in levels:
            self.draft.add(width, seconds)


class LookupStage:
    """The second stage of DynaTree(staged=True) for one generation (core.draft's Stage): below the most probable
    of the nodes a draft forward feeds, what followed the latest earlier occurrence of the last 2-3 tokens of its
    context (the prompt, the text so far, the node's path), at most _STAGE_TOKENS and `room` tokens, and of those
    only the first ones that pay for their rows (`paying`)."""

    def __init__(self, run: Run, shaped: Shaped):
        from .ngram import lookup  # methods.ngram builds on this module

        self.run, self.shaped, self.lookup = run, shaped, lookup
        self.offers: list[tuple[int, list[int]]] = []  # this round's proposals: (node, tokens fed below it)
        # running chances that the i-th proposed token is adopted and that it saves a forward (its level needed
        # none: every node of it was adopted), by position in the proposal
        self.adopted = [_STAGE_PRIOR] * _STAGE_TOKENS
        self.saves = [_STAGE_PRIOR] * _STAGE_TOKENS

    def __call__(self, tree, nodes, room: int) -> tuple[int, list[int]]:
        node = int(nodes[tree.cum_logp[nodes].argmax()])
        context = self.run.prompt_ids + self.run.tokens + tree.tokens[tree.path(node)[1:]].tolist()
        chains, n = self.lookup(context, _STAGE_NGRAM[1], min(_STAGE_TOKENS, room)) if room else ([], 0)
        tokens = chains[0][:self.paying()] if n >= _STAGE_NGRAM[0] else []
        self.shaped.level_fed = len(nodes) + len(tokens)
        if tokens:
            self.offers.append((node, tokens))
        return node, tokens

    @property
    def proposed(self) -> int:
        """Tokens proposed this round."""
        return sum(len(tokens) for _, tokens in self.offers)

    def paying(self) -> int:
        """How many proposed tokens to feed: the first ones whose expected return pays for their rows. A token
        costs one row (draft_per_node; on a CPU about 0.05 of a one-node level for the bf16 draft, 0.2 for the
        int4 draft, whose kernel's cost grows with the rows); adopted, it spares the row its node would have
        needed, and where its whole level was adopted it spares that level's forward. In a branching tree most
        adoptions spare only the row: unlimited proposals cost the int4 draft more time than they saved on prose.
        Chances the stage no longer feeds drift back to the prior, so they are tried again as the text changes."""
        shaped = self.shaped
        level = shaped.draft.at(1) if shaped.timed else None
        row = _DRAFT_NODE_SLOPE if level is None else shaped.draft.slope() / level  # in one-node levels
        k = 0
        while k < _STAGE_TOKENS and self.saves[k] + row * self.adopted[k] >= row:
            k += 1
        for i in range(k, _STAGE_TOKENS):
            self.adopted[i] += _STAGE_DRIFT * (_STAGE_PRIOR - self.adopted[i])
            self.saves[i] += _STAGE_DRIFT * (_STAGE_PRIOR - self.saves[i])
        return k

    def learn(self, parent: list[int], token: list[int], free_levels: set[int]) -> None:
        """Each proposal of the round ends where the grown tree left it: tokens 1..i were adopted if the tree has
        them as a path below the proposal's node, and an adopted token saved a forward if its depth is one of the
        round's `free_levels` (Shaped's bookkeeping: parent and token per tree node, in tree order)."""
        child = {(p, t): node for node, (p, t) in enumerate(zip(parent, token))}
        depth = [0] * len(parent)
        for node in range(1, len(parent)):
            depth[node] = depth[parent[node]] + 1
        for node, tokens in self.offers:
            for i, t in enumerate(tokens):
                node = child.get((node, t)) if node is not None else None
                self.adopted[i] = _ema(self.adopted[i], float(node is not None))
                self.saves[i] = _ema(self.saves[i], float(node is not None and depth[node] in free_levels))
        self.offers = []


class ShapedDrafter(TreeDrafter):
    """DynaTree's drafter: `shaped` decides, level by level, and learns from each round (from the clock only when
    the run is greedy: a sampled run's draws must not depend on timings); `stage` (optional) is DynaTree(staged=True)'s
    second stage."""

    def __init__(self, shaped: Shaped, run: Run, width: int, depth: int, stage: LookupStage | None = None):
        super().__init__(run, shaped.expand, width, depth, shaped.select_frontier, branches=shaped.branches,
                         stage=stage)
        self.shaped = shaped
        shaped.run, shaped.timed = run, run.sampling is None

    def notes(self) -> dict:
        notes = self.shaped.notes()
        return notes if self.stage is None else {**notes, "stage_tokens": self.stage.proposed}

    def learn(self, record: dict) -> None:
        if self.stage is not None:  # before shaped.learn starts a new round's bookkeeping
            self.stage.learn(self.shaped.parent, self.shaped.token, self.shaped.free_levels)
        self.shaped.learn(record)

    def summary(self) -> dict:
        return self.shaped.summary()
