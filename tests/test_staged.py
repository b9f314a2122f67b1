"""Staged drafting: DynaTree(staged=True) and core.draft's stage hook. The draft checks cheap proposals (prompt
lookup) in the forwards it makes anyway; where its own level rule picks them, the tree grows several levels per draft
forward. Exact (float32, three architectures, three drafts, prompts with and without repeated n-grams), the same
tree as unstaged drafting, fewer draft forwards, and rejected proposals leave nothing in the draft's cache."""
import json

import pytest
import torch

from dynatree_lib import DynaTree, HybridTree, generate, label
from dynatree_lib.bench import parse_method
from dynatree_lib.core import kvcache
from dynatree_lib.core.draft import DraftState, commit_draft, draft_tree, fixed_expand
from dynatree_lib.methods.names import display_names, from_record, identity
from method_traces import fake_clock
from tiny import ARCHS, DRAFTS, VOCAB, reference_greedy, sharp_pair, tiny_pair

REPEATS = [5, 17, 3, 42, 5, 17, 3, 9, 11, 5, 17, 3, 42, 5, 17]  # its 2- and 3-grams recur: proposals from round 1
PLAIN = [3, 14, 15, 92, 65, 35, 89, 79]  # no token twice: proposals only once the output repeats itself
N = 40
STAGED = DynaTree(staged=True)


@pytest.mark.parametrize("prompt", [REPEATS, PLAIN], ids=["repeats", "plain"])
@pytest.mark.parametrize("pair_of", [tiny_pair, sharp_pair], ids=["tiny", "sharp"])
@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_staged_dynatree_equals_greedy(arch, draft_kind, pair_of, prompt):
    pair = pair_of(arch, draft_kind)
    out = generate(pair, prompt, STAGED, N, stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, prompt, N)
    assert sum(r["committed"] for r in out.trace) == N - 1
    if prompt is REPEATS:
        assert sum(r["stage_tokens"] for r in out.trace) > 0  # the lookup proposed, the draft checked


@pytest.mark.parametrize("arch", ARCHS)
def test_staged_inside_a_hybrid_tree_equals_greedy(arch):
    """HybridTree grafts n-gram chains onto the staged tree and reorders it: rejected proposals' slots stay dropped."""
    pair = sharp_pair(arch, "perturbed")
    out = generate(pair, REPEATS, HybridTree(STAGED), N, stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, REPEATS, N)


CHAIN = {"min_branch": 1, "default_branch": 1, "max_branch": 1}  # DynaTree's rules, one child per node


@pytest.mark.parametrize("arch", ARCHS)
def test_staging_takes_fewer_draft_forwards_per_token(arch):
    """draft == target on a prompt whose continuation falls into a loop: the lookup proposes the loop, the draft
    agrees, and levels come without forwards of their own. Where the tree is one path it takes far fewer forwards;
    where it branches (the default on these tiny models), a level still needs a forward for the siblings, so never
    more. A fake clock keeps the cost model's decisions independent of this machine's load."""
    pair = sharp_pair(arch, "same")
    for shape, most in ((CHAIN, 0.75), ({}, 1.0)):
        runs = {}
        for staged in (False, True):
            with fake_clock():
                out = generate(pair, REPEATS, DynaTree(staged=staged, **shape), 2 * N, stop_at_eos=False)
            assert out.token_ids == reference_greedy(pair.target, REPEATS, 2 * N)
            runs[staged] = out.stats["draft_forwards"] / out.stats["new_tokens"]
        assert runs[True] <= most * runs[False], (shape, runs)


def _chain_stage(belief: list[int]):
    """A stage that proposes `belief` (the tokens it expects below the root) below the first node fed, from that
    node's depth on; it also checks what draft_tree hands it."""
    calls = []

    def stage(tree, nodes, room):
        assert room >= 0 and len(set(tree.depth[nodes].tolist())) == 1  # one level, never past the deepest fed one
        node = int(nodes[0])
        calls.append(node)
        depth = int(tree.depth[node])
        return node, belief[depth: depth + room]

    return stage, calls


def _draft(pair, prompt, expand, width, depth, stage=None):
    state = DraftState(kvcache.new_cache(pair.draft), pending=list(prompt))
    return state, draft_tree(pair.draft, state, expand, width, depth, stage=stage)


@pytest.mark.parametrize("wrong_at", [None, 0, 3], ids=["all-right", "first-wrong", "fourth-wrong"])
@pytest.mark.parametrize("branch", [1, 2], ids=["chain", "tree"])
@pytest.mark.parametrize("arch", ARCHS)
def test_a_stage_grows_the_same_tree_and_leaves_nothing_in_the_cache(arch, branch, wrong_at):
    """core.draft.draft_tree with a stage proposing the draft's own greedy chain (one token wrong, or none): the
    tree equals the one grown without it, a chain takes fewer forwards, and after commit_draft the draft's cache
    equals the unstaged one, whichever path was accepted (rejected proposals are gone, adopted ones in place)."""
    pair = tiny_pair(arch, "perturbed")
    prompt, depth = [5, 17, 3, 60, 9], 7
    belief = reference_greedy(pair.draft, prompt, depth)
    if wrong_at is not None:
        belief[wrong_at] = (belief[wrong_at] + 1) % VOCAB
    stage, calls = _chain_stage(belief)
    expand = fixed_expand(branch, 0.0, 20)
    plain = _draft(pair, prompt, expand, branch, depth)[1]
    staged = _draft(pair, prompt, expand, branch, depth, stage)[1]
    assert torch.equal(staged.tree.tokens, plain.tree.tokens) and torch.equal(staged.tree.parents, plain.tree.parents)
    assert torch.allclose(staged.tree.cum_logp, plain.tree.cum_logp, atol=1e-5)
    assert len(calls) == staged.forwards  # asked before every forward
    if branch == 1:
        assert plain.forwards == depth  # the root's forward, then one per level but the deepest
        assert staged.forwards == {None: 1, 0: 2, 3: 2}[wrong_at]
        assert staged.fed.count(-1) == {None: 0, 0: depth - 1, 3: depth - 1 - 3}[wrong_at]
    else:
        assert staged.forwards <= plain.forwards and staged.fed.count(-1) > 0
    leaves = [n for n in range(len(plain.tree)) if n not in plain.tree.parents.tolist()]
    for end in (leaves[0], leaves[-1], 2):
        path = plain.tree.path(end)
        plain_state, plain = _draft(pair, prompt, expand, branch, depth)
        staged_state, staged = _draft(pair, prompt, expand, branch, depth, _chain_stage(belief)[0])
        commit_draft(plain_state, plain, path, bonus=7)
        commit_draft(staged_state, staged, path, bonus=7)
        assert staged_state.pending == plain_state.pending
        assert kvcache.cache_len(staged_state.cache) == kvcache.cache_len(plain_state.cache)
        for mine, theirs in zip(staged_state.cache.layers, plain_state.cache.layers):
            assert torch.allclose(mine.keys, theirs.keys, atol=1e-5)
            assert torch.allclose(mine.values, theirs.values, atol=1e-5)


def test_a_stage_must_continue_a_fed_node():
    pair = tiny_pair("llama", "perturbed")
    with pytest.raises(ValueError, match="a stage must continue one of the nodes fed"):
        _draft(pair, [1, 2, 3], fixed_expand(1, 0.0, 8), 1, 4, stage=lambda tree, nodes, room: (5, [1, 2]))


@pytest.mark.parametrize("bad", [1, 0, "yes", 1.0])
def test_staged_must_be_a_bool(bad):
    with pytest.raises(ValueError, match=f"staged must be True or False, got {bad!r}"):
        DynaTree(staged=bad)


def test_staged_reads_back_and_has_its_own_name():
    method = DynaTree(staged=True, draft_bits=4)
    assert label(method) == "DynaTree(draft_bits=4, staged=True)"
    kind, params = identity(method)
    assert parse_method(label(method)) == method and from_record(kind, json.loads(params)) == method
    names = display_names([DynaTree(draft_bits=4), method])
    assert names == ["DynaTree · int4 draft", "DynaTree · int4 draft · staged"]


def test_staging_is_the_default_for_an_unquantized_draft_only():
    assert DynaTree().staged is True and DynaTree(draft_bits=8).staged is DynaTree(draft_bits=4).staged is False
    assert DynaTree(staged=None) == DynaTree(staged=True) and label(DynaTree(staged=True)) == "DynaTree"
    assert label(DynaTree(staged=False)) == "DynaTree(staged=False)"
    assert display_names([DynaTree(), DynaTree(staged=False)]) == ["DynaTree", "DynaTree · unstaged"]


def test_rows_stored_before_staging_existed_load_unstaged():
    """A row written before the field existed was measured unstaged, whatever today's default is; one that stores
    the field keeps it. Nested methods (a window around DynaTree) follow the same rule."""
    old = json.loads(identity(DynaTree())[1])
    del old["staged"]
    assert from_record("DynaTree", old) == DynaTree(staged=False)
    assert from_record("DynaTree", {**old, "staged": True}) == DynaTree()
    window = from_record("Streaming", {"method": {"method_type": "DynaTree", "method_params": old}, "cache_size": 64})
    assert window.method == DynaTree(staged=False)


def test_sampling_with_a_stage_is_reproducible():
    """Sampling draws from the draft's distribution at each node, wherever its logits were computed: a seed still
    reproduces a run, and the wall clock never decides (staged or not, costs stay at their priors)."""
    pair = sharp_pair("qwen2", "perturbed")
    runs = [generate(pair, REPEATS, STAGED, N, stop_at_eos=False, temperature=0.8, seed=3).token_ids
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == N


class _Costs:
    """Shaped's fitted draft line as a stub: a one-node level costs 1, each further row `row`."""

    def __init__(self, row: float):
        self.row = row

    def at(self, width):
        return 1 + self.row * (width - 1)

    def slope(self):
        return self.row


def _stage(row: float, timed: bool = True):
    from types import SimpleNamespace

    from dynatree_lib.methods.confidence import LookupStage

    shaped = SimpleNamespace(draft=_Costs(row), timed=timed, level_fed=None)
    return LookupStage(SimpleNamespace(), shaped)


def test_the_stage_feeds_only_the_proposed_tokens_that_pay_for_their_rows():
    """LookupStage.paying: a token is fed while its chance of saving a forward, plus its chance of sparing its own
    row, pays for its row. Cheap rows (a bf16 draft on a CPU): everything; costly rows and proposals the tree never
    adopted: nothing, until the chances drift back to the prior and the stage tries again."""
    from dynatree_lib.methods.confidence import _STAGE_TOKENS

    cheap, costly = _stage(0.05), _stage(0.3)
    assert cheap.paying() == costly.paying() == _STAGE_TOKENS  # the prior: proposals are tried
    for stage in (cheap, costly):
        stage.adopted, stage.saves = [0.4] * _STAGE_TOKENS, [0.1] * _STAGE_TOKENS
        stage.saves[3] = 0.0
    assert cheap.paying() == 3  # 0.1 + 0.05 * 0.4 >= 0.05 for the first three; the 4th: 0.0 + 0.02 < 0.05
    assert costly.paying() == 0  # 0.1 + 0.3 * 0.4 < 0.3
    tried = 0
    while costly.paying() == 0:
        tried += 1
        assert tried < 200, "chances never drift back to the prior"
    assert _stage(0.3, timed=False).paying() == _STAGE_TOKENS  # sampling: the prior row cost, never the clock


def test_the_stage_learns_which_proposed_tokens_were_adopted_and_which_saved_a_forward():
    """LookupStage.learn walks each proposal down the round's tree: the first token adopted at a level that took no
    forward (saves), the second adopted at a level that still took one, the third not in the tree."""
    stage = _stage(0.2)
    # tree: root 0 -> 1 (token 7) -> 2 (token 8); node 1 also has a sibling 3 (token 4)
    parent, token = [-1, 0, 1, 0], [-1, 7, 8, 4]
    stage.offers = [(0, [7, 8, 9])]
    before = list(stage.adopted), list(stage.saves)
    stage.learn(parent, token, free_levels={1})
    assert stage.adopted[0] > before[0][0] and stage.saves[0] > before[1][0]
    assert stage.adopted[1] > before[0][1] and stage.saves[1] < before[1][1]
    assert stage.adopted[2] < before[0][2] and stage.saves[2] < before[1][2]
    assert stage.offers == [] and stage.proposed == 0
