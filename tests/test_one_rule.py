"""One rule, many callers: live drafting, the batched supersets and the acceptance replay choose children with the
same functions of core.draft (`choose` for the threshold and budget, `candidates` for the draft's ranked
candidates, `draft_level` for a level of drafting). Change one of those functions and every caller changes with it:
the replay still equals generate round for round. A second implementation of the rule anywhere in the bench would
keep the old behaviour there, and these tests fail."""
import inspect
import sys
from collections import Counter

import pytest
import torch

from dynatree_lib import FixedTree, Linear, generate, label
from dynatree_lib.bench import replay, supersets
from dynatree_lib.bench.replay import Replay, Superset
from dynatree_lib.bench.supersets import greedy_continuation, live_replay
from dynatree_lib.core import draft
from test_replay import FIELDS, check_equal, spec_for
from tiny import tiny_pair

PROMPT = [5, 17, 3, 60]
N = 40
BUDGETED = [FixedTree(depth=8, branch=4, threshold=0.01, max_nodes=5),  # rule 1, the budget binds at level 2
            FixedTree(depth=6, branch=3, threshold=0.0, max_nodes=10),  # tau = 0: an exact extra (rule 3)
            Linear(4)]  # the chain (rule 2)


def patch_everywhere(monkeypatch, original, replacement):
    """Replace `original` under every name a loaded dynatree_lib module holds it by (however it was imported)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("dynatree_lib") and module is not None:
            for attr, value in list(vars(module).items()):
                if value is original:
                    monkeypatch.setattr(module, attr, replacement)


def trace(pair, method):
    return [{k: r[k] for k in FIELDS} for r in generate(pair, PROMPT, method, N, stop_at_eos=False).trace]


@pytest.mark.parametrize("batch", [1, 6])
def test_a_changed_budget_rule_moves_live_and_replay_together(monkeypatch, batch):
    """Every budget one node smaller: live trees shrink, and the replay (its supersets drafted one start at a time
    or `batch` together) shrinks them the same way."""
    pair = tiny_pair("llama", "perturbed")
    before = {label(m): trace(pair, m) for m in BUDGETED}
    real = draft.choose

    def tighter(cum, threshold=0.0, room=None, keep=None, groups=None):
        if room is not None:
            room = max(room - 1, 0) if groups is None else [None if r is None else max(r - 1, 0) for r in room]
        return real(cum, threshold, room, keep, groups)

    patch_everywhere(monkeypatch, real, tighter)
    for method in BUDGETED:
        assert trace(pair, method) != before[label(method)], label(method)  # the change is visible live
        check_equal(pair, PROMPT, method, N, live_replay(pair, PROMPT, N, spec_for(method), batch=batch))


@pytest.mark.parametrize("batch", [1, 6])
def test_changed_candidates_move_live_and_supersets_together(monkeypatch, batch):
    """The draft never proposes one token (the continuation's most frequent): live trees lose it, and so do the
    supersets, drafted alone (draft_tree) or batched (draft_supersets)."""
    pair = tiny_pair("qwen2", "perturbed")
    methods = [FixedTree(depth=8, branch=4, threshold=0.01), FixedTree(depth=6, branch=3, threshold=0.0,
                                                                          max_nodes=10)]
    before = {label(m): trace(pair, m) for m in methods}
    target = greedy_continuation(pair, PROMPT, N)
    banned = max(set(target), key=target.count)
    real = draft.candidates

    def without(logits, width, ids=None, vocab=None):
        logits = logits.clone()
        logits[..., banned] = float("-inf")
        return real(logits, width, ids, vocab)

    patch_everywhere(monkeypatch, real, without)
    for method in methods:
        assert trace(pair, method) != before[label(method)], label(method)
        check_equal(pair, PROMPT, method, N, live_replay(pair, PROMPT, N, spec_for(method), batch=batch))


def test_every_caller_reaches_the_core_functions(monkeypatch):
    """Who calls the rule: live drafting (select_children, draft_tree), the supersets (their expand policy, the
    batched draft_supersets) and the replay's selection, also from stored supersets without a model."""
    callers = Counter()

    def counting(original):
        def wrapper(*args, **kwargs):
            callers[(original.__name__, sys._getframe(1).f_code.co_name)] += 1
            return original(*args, **kwargs)
        return wrapper

    for original in (draft.choose, draft.candidates, draft.draft_level):
        patch_everywhere(monkeypatch, original, counting(original))
    pair = tiny_pair("gpt_neox", "perturbed")
    method = FixedTree(depth=6, branch=3, threshold=0.0, max_nodes=10)
    generate(pair, PROMPT, method, N, stop_at_eos=False)
    for batch in (1, 6):
        live = live_replay(pair, PROMPT, N, spec_for(method), batch=batch)
        live.rounds(method, N)
    stored = {start: Superset.unpack(s.pack()) for start, s in live.supersets.items()}
    callers.pop(("choose", "select"))
    Replay(PROMPT, live.target, supersets=stored, spec=live.spec).rounds(method, N)
    assert set(callers) == {("choose", "select_children"), ("choose", "expand"), ("choose", "select"),
                            ("candidates", "draft_level"), ("draft_level", "draft_tree"),
                            ("draft_level", "draft_supersets")}


def test_the_bench_holds_no_rule_of_its_own():
    """The operations of the rule and of a drafting level live in core.draft only."""
    for module in (replay, supersets):
        source = inspect.getsource(module)
        for operation in ("topk(", "log_softmax(", "add_level(", "math.log("):  # calls, not mentions
            assert operation not in source, (module.__name__, operation)
    assert replay.choose is draft.choose and supersets.choose is draft.choose
    assert supersets.draft_level is draft.draft_level and supersets.draft_tree is draft.draft_tree


@pytest.mark.parametrize("seed", range(20))
def test_batched_choose_is_each_group_chosen_alone(seed):
    """The replay's batched call (one group per policy) picks, group by group, what a call for that group alone
    picks: the same threshold comparison and the same torch.topk on the same values, ties included."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, 5, (6,), generator=gen).tolist()
    groups = torch.repeat_interleave(torch.arange(6), torch.tensor(sizes))
    cum = -torch.randint(0, 12, (len(groups), 4), generator=gen).float() / 4  # coarse: ties are common
    keep = torch.rand(len(groups), 4, generator=gen) < 0.8
    thresholds = [0.0, 0.05, 0.2, 0.0, 0.5, 0.01]
    rooms = [None, 2, 0, 3, 1, 5]
    rows, cols = draft.choose(cum, thresholds, rooms, keep, groups)
    at = 0
    for g, size in enumerate(sizes):
        r, c = draft.choose(cum[at: at + size], thresholds[g], rooms[g], keep[at: at + size])
        mine = groups[rows] == g
        assert torch.equal(rows[mine], r + at) and torch.equal(cols[mine], c), g
        at += size
    with_room = draft.choose(torch.tensor([[0.0, -1.0], [-5.0, -0.5]]), 0.1, 2)
    assert [t.tolist() for t in with_room] == [[0, 1], [0, 1]]  # -1.0 passes log(0.1) but loses to -0.5
