"""book.ablation: the ablation chapter's stages, figures, tables and the numbers its prose glues, on hand-made rows
whose answers are known (test_tables.rows: AR at 10 tok/s, every method at the speedup given)."""
from __future__ import annotations

import math

import myst_nb
import pytest

from dynatree_lib.book import ablation, page, tables
from dynatree_lib.methods.adaptive import AdaptiveTree
from dynatree_lib.methods.base import FixedTree, label
from test_tables import AR, ablation_rows, rows


def losing_at_4_gaining_at_5():
    """At base depth 4 every phase p loses 0.05 * p against the fixed tree, at base depth 5 it gains 0.05 * p."""
    return ablation_rows(lambda depth: 0.1 * (depth - 4.5))


def test_stages_pick_the_rows_a_figure_compares():
    abl = tables.ablation_table(losing_at_4_gaining_at_5())
    chain = ablation.stages(abl, ablation.PHASES)
    assert set(chain["stage"]) == set(ablation.PHASES) and all(isinstance(s, str) for s in chain["stage"])
    assert sorted(set(chain["base_depth"])) == [4, 5]
    switches = ablation.stages(abl, ablation.SWITCHES, base_depth=5)
    assert set(switches["stage"]) == {"fixed tree", "phase 3", "phase 3, no pruning"}
    assert set(switches["base_depth"]) == {5}
    with pytest.raises(ValueError, match="phase 4"):
        ablation.stages(abl, ["fixed tree", "phase 4"])


def test_phase3_gain_beside_the_research_and_its_numbers():
    chain = ablation.stages(tables.ablation_table(losing_at_4_gaining_at_5()), ablation.PHASES)
    gain = ablation.phase3_gain(chain).set_index("base_depth")
    assert list(gain.index) == [4, 5, 6]  # 6: the research's only
    assert list(gain["gain_over_fixed"][:2]) == [pytest.approx(-0.15), pytest.approx(0.15)]
    assert math.isnan(gain.loc[6, "gain_over_fixed"]) and gain.loc[6, "research_gain_500_tokens"] == 0.05
    numbers = ablation.gain_numbers(gain.reset_index())
    assert numbers == {"cases": 2, "wins": 1, "gain_min": pytest.approx(-0.15), "gain_max": pytest.approx(0.15),
                       "best_depth": 5, "best_tokens": 32}
    with pytest.raises(ValueError, match="no phase 3 gain"):
        ablation.gain_numbers(gain.reset_index().iloc[2:])


def test_figures_draw_every_stage_against_plain_decoding():
    abl = tables.ablation_table(losing_at_4_gaining_at_5())
    chain = ablation.stages(abl, ablation.PHASES)
    phases = ablation.phases_figure(chain)
    assert sorted(trace.name for trace in phases.data) == ["4", "5"]  # one bar series per base depth
    assert sum(len(trace.x) for trace in phases.data) == len(chain)
    switches = ablation.switches_figure(ablation.stages(abl, ablation.SWITCHES, 5), 5)
    assert not switches.layout.showlegend and "base depth 5" in switches.layout.title.text
    sens = tables.sensitivity_table(rows({"a": {AR: 1.0, AdaptiveTree(phase=3): 1.25,
                                                AdaptiveTree(phase=3, min_branch=2): 1.0}}))
    settings = ablation.sensitivity_figure(sens)
    assert sorted(settings.data[0].x) == ["conf 0.9/0.4, branches [1, 3], default 2",
                                          "conf 0.9/0.4, branches [2, 3], default 2"]
    for fig in (phases, switches, settings):
        assert [(shape.y0, shape.y1) for shape in fig.layout.shapes] == [(1.0, 1.0)]  # plain decoding's speed


def test_research_table_sets_ours_beside_each_stage():
    side = ablation.research_table(losing_at_4_gaining_at_5()).set_index("method")
    assert side.loc["Phase 3", "ours_speedup"] == pytest.approx(1.15)  # base depth 5, the research's default
    assert side.loc["Fixed tree D=5 B=2", "ours_speedup"] == pytest.approx(1.0)
    assert side.loc["Phase 3", "research_speedup"] == 1.61 and set(side["ours_new_tokens"]) == {32}
    assert "AR" not in side.index


def test_sensitivity_numbers():
    default, wider = AdaptiveTree(phase=3), AdaptiveTree(phase=3, min_branch=2)
    sens = tables.sensitivity_table(rows({"a": {AR: 1.0, default: 1.25, wider: 1.0}}))
    assert ablation.sensitivity_numbers(sens) == {
        "best_confidence": "0.9/0.4", "best_branches": "[1, 3], default 2", "best_speedup": 1.25,
        "min2_change": pytest.approx(-0.2)}
    alone = tables.sensitivity_table(rows({"a": {AR: 1.0, default: 1.25}}))
    assert math.isnan(ablation.sensitivity_numbers(alone)["min2_change"])


def test_research_numbers_as_the_prose_writes_them(monkeypatch):
    numbers = ablation.research_numbers()
    assert numbers["gains"] == "+31%, +6%, +5%" and numbers["depths"] == "4, 5, 6"
    assert numbers["confidence"] == "0.9/0.4" and numbers["branch_range"] == "[1, 3]"
    assert numbers["min2_loss"] == 0.18 and numbers["min2_change"] == -0.18
    assert numbers["gain_by_length"] == "+0.4% at 100 tokens, +9.3% at 1000 tokens"
    glued = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: glued.append(name))
    page.glue_numbers(numbers, "research_")
    assert len(glued) == len(numbers)


def test_research_stages_are_the_chapters_methods():
    assert ablation.RESEARCH_STAGES["Phase 3"] == label(AdaptiveTree()) and \
        ablation.RESEARCH_STAGES["Fixed tree D=5 B=2"] == label(FixedTree(depth=5, branch=2))
