"""The round player (dynatree_lib.book.rounds): the recorded rounds are the generation's own, and the figure plays
them with a slider."""
from __future__ import annotations

import pytest

import dynatree_lib as dt
from dynatree_lib.book import rounds
from tiny import reference_greedy, sharp_pair

PROMPT = [5, 17, 42, 8, 61, 3]


@pytest.mark.parametrize("method", [dt.DynaTree(), dt.FixedTree(depth=3, branch=2), dt.Linear(4)],
                         ids=["dynatree", "fixed", "chain"])
def test_recorded_rounds_rebuild_the_generation(method):
    pair = sharp_pair("qwen2", "perturbed")
    gen, played = rounds.record_rounds(pair, PROMPT, method, 24, stop_at_eos=False)
    assert gen.token_ids == reference_greedy(pair.target, PROMPT, 24)  # recording changes nothing
    assert played, "no round drafted a tree"
    for rnd in played:
        path = rnd.path
        assert path[0] == 0 and all(rnd.parents[b] == a for a, b in zip(path, path[1:]))
        assert [rnd.tokens[i] for i in path[1:]] == rnd.committed[:-1]  # the accepted draft tokens, then the bonus
    # every full round's committed tokens, in order, are a stretch of the output
    text = gen.token_ids
    for rnd in played:
        n = len(rnd.committed)
        assert any(text[i:i + n] == rnd.committed for i in range(len(text) - n + 1))


def test_player_has_a_slider_step_per_round():
    pair = sharp_pair("qwen2", "perturbed")
    gen, played = rounds.record_rounds(pair, PROMPT, dt.DynaTree(), 24, stop_at_eos=False)
    fig = rounds.player(gen, played)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == len(played) and len(fig.data) == 3 * len(played)
    for r, step in enumerate(steps):
        shown = step.args[0]["visible"]
        assert [i for i, v in enumerate(shown) if v] == [3 * r, 3 * r + 1, 3 * r + 2]
        assert step.args[1]["title.text"].startswith(f"Round {r + 1} of {len(played)}")


def test_refuses_a_method_without_trees():
    pair = sharp_pair("qwen2", "perturbed")
    with pytest.raises(ValueError, match="drafts trees"):
        rounds.record_rounds(pair, PROMPT, dt.Autoregressive(), 8)
    with pytest.raises(ValueError, match="nothing to play"):
        rounds.player(None, [])
