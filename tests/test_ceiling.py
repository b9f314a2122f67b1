"""The speedup model of book/ceiling.py: it inverts itself, recovers known costs from rows, and refuses bad input."""
import math

import numpy as np
import pandas as pd
import pytest

from dynatree_lib.book import ceiling
from dynatree_lib.book.ceiling import RoundCosts

COSTS = RoundCosts(verify_base=0.9, verify_per_node=0.03, draft_level=0.17)


def test_chain_tokens_limits():
    assert float(ceiling.chain_tokens(1.0, 5)) == 6
    assert float(ceiling.chain_tokens(0.0, 5)) == 1
    assert float(ceiling.chain_tokens(0.5, 2)) == pytest.approx(1 + 0.5 + 0.25)


def test_acceptance_inverts_tokens():
    for a in (0.3, 0.8, 0.95):
        assert ceiling.chain_acceptance(float(ceiling.chain_tokens(a, 5)), 5) == pytest.approx(a, abs=1e-9)


def test_needed_acceptance_and_draft_cost_reach_the_target():
    a = ceiling.acceptance_for(3.0, COSTS)
    assert ceiling.chain_ceiling(a, COSTS)[0] == pytest.approx(3.0, rel=1e-6)
    assert ceiling.chain_ceiling(a - 0.01, COSTS)[0] < 3.0
    level = ceiling.draft_level_for(3.0, 0.85, COSTS)
    assert level < COSTS.draft_level
    cheaper = RoundCosts(COSTS.verify_base, COSTS.verify_per_node, level)
    assert ceiling.chain_ceiling(0.85, cheaper)[0] == pytest.approx(3.0, rel=1e-6)
    assert math.isnan(ceiling.draft_level_for(40.0, 0.85, COSTS))  # verify alone forbids it


def test_no_chain_passes_the_bound():
    for a in np.linspace(0, 1, 21):
        assert ceiling.chain_ceiling(float(a), COSTS, max_depth=500)[0] <= ceiling.bound(COSTS) + 1e-12


def _rows(costs: RoundCosts, ar_step: float = 0.3):
    rows = []
    for prompt in ("HumanEval/1", "prose/x"):
        rows.append(dict(method="AR", prompt_id=prompt, max_new_tokens=64, rounds=64, verify_s=64 * ar_step,
                         drafted_nodes=0, draft_forwards=0, draft_forward_s=0.0, tokens_per_round=1.0, speedup=1.0))
        for nodes in (4, 8, 16):
            rounds = 10
            rows.append(dict(method=f"Tree({nodes})", prompt_id=prompt, max_new_tokens=64, rounds=rounds,
                             verify_s=rounds * ar_step * (costs.verify_base + costs.verify_per_node * nodes),
                             drafted_nodes=rounds * nodes, draft_forwards=rounds * 5,
                             draft_forward_s=rounds * 5 * costs.draft_level * ar_step, tokens_per_round=4.0,
                             speedup=2.0))
    return pd.DataFrame(rows)


def test_measured_costs_recover_known_costs():
    fitted = ceiling.measured_costs(_rows(COSTS), "Tree(8)")
    assert fitted.verify_base == pytest.approx(COSTS.verify_base)
    assert fitted.verify_per_node == pytest.approx(COSTS.verify_per_node)
    assert fitted.draft_level == pytest.approx(COSTS.draft_level)
    table = ceiling.ceiling_table(_rows(COSTS), "Tree(4)", depth=5, beside="Tree(16)")
    assert list(table["kind"]) == ["code", "prose", "all"]
    assert (table["Tree(16) speedup"] == 2.0).all()
    assert (table["chain_best"] <= table["bound"]).all()
    shown = ceiling.ceiling_shown(table, "Tree(16)")
    assert list(shown.columns) == ["Text", "Acceptance", "Chain, measured", "DynaTree, measured", "Chain best",
                                   "Acceptance for 3x", "Level for 3x"]
    n = ceiling.ceiling_numbers(table)
    assert n["c_draft_level"] == pytest.approx(COSTS.draft_level) and n["c_bound"] == pytest.approx(ceiling.bound(COSTS))
    assert n["level_ratio"] == pytest.approx(COSTS.draft_level / n["need_level"])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="draft_level"):
        RoundCosts(0.9, 0.03, -0.1)
    with pytest.raises(ValueError, match="tokens per round"):
        ceiling.chain_acceptance(7.0, 5)
    with pytest.raises(ValueError, match="no AR rows"):
        ceiling.measured_costs(_rows(COSTS).query("method != 'AR'"), "Tree(8)")
    with pytest.raises(ValueError, match="no runs of"):
        ceiling.measured_costs(_rows(COSTS), "Linear(K=5)")
