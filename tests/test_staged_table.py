"""book.staged: staged drafting beside the unstaged default, from hand-made rows with known answers."""
import math

import pandas as pd
import pytest

from dynatree_lib.book import staged
from dynatree_lib.methods import DynaTree, HFAssisted
from test_tables import AR, rows

INT4, INT4_STAGED = DynaTree(draft_bits=4), DynaTree(draft_bits=4, staged=True)


def staged_rows(bf16=False):
    spec = {"HumanEval/1": {AR: 1.0, HFAssisted(draft_bits=4): 1.5, INT4: 2.0, INT4_STAGED: 2.2},
            "prose/a": {AR: 1.0, HFAssisted(draft_bits=4): 1.5, INT4: 2.0, INT4_STAGED: 1.8}}
    if bf16:
        for s in spec.values():
            s |= {DynaTree(staged=False): 1.4, DynaTree(staged=True): 1.4}
    df = rows(spec, n=128)
    df["new_tokens"] = 128
    staging = df["method_params"].str.contains('"staged": true')
    # 128 tokens: the unstaged runs one draft forward per token, the staged half as many; plain decoding none
    df["draft_forwards"] = (df["draft_forwards"] > 0) * 128 // (1 + staging)
    df["draft_s"] = 0.5 / (1 + staging)
    return df


def test_table_sets_forwards_per_token_beside_the_summary():
    table = staged.staged_table(staged_rows(), 128).set_index("Method")
    assert table.loc["DynaTree · int4 draft · staged", "Draft forwards per token"] == pytest.approx(0.5)
    assert table.loc["DynaTree · int4 draft", "Draft forwards per token"] == pytest.approx(1.0)
    assert math.isnan(table.loc["Plain decoding", "Draft forwards per token"])  # no draft
    assert table.loc["DynaTree · int4 draft · staged", "Speedup"] == pytest.approx(2.0)  # median of 2.2 and 1.8


def test_numbers_compare_staged_with_unstaged_per_prompt():
    n = staged.staged_numbers(staged_rows(), 128)
    assert set(n) == {"st_int4_forwards", "st_int4_staged_forwards", "st_int4_speed", "st_int4_speed_min",
                      "st_int4_speedup", "st_int4_staged_speedup", "st_int4_draft_s", "st_int4_staged_draft_s"}
    assert (n["st_int4_speedup"], n["st_int4_staged_speedup"]) == (pytest.approx(2.0), pytest.approx(2.0))
    assert n["st_int4_staged_draft_s"] == pytest.approx(0.25)
    assert n["st_int4_speed"] == pytest.approx(1.0) and n["st_int4_speed_min"] == pytest.approx(0.9)  # 1.1, 0.9
    assert (n["st_int4_forwards"], n["st_int4_staged_forwards"]) == (pytest.approx(1.0), pytest.approx(0.5))
    assert staged.staged_numbers(staged_rows(bf16=True), 128)["st_bf16_speed"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both unstaged and staged"):
        staged.staged_numbers(staged_rows()[lambda d: ~d["method_params"].str.contains('"staged": true')], 128)


def test_table_leaves_out_the_methods_staging_is_not_compared_with():
    """Fed the whole speed table, the staged table shows the staged comparison only (a chain is not part of it)."""
    from dynatree_lib.methods import Linear

    df = staged_rows()
    chain = rows({"HumanEval/1": {Linear(k=5, draft_bits=4): 1.7}, "prose/a": {Linear(k=5, draft_bits=4): 1.7}},
                 n=128)
    chain["new_tokens"] = 128
    table = staged.staged_table(pd.concat([df, chain], ignore_index=True), 128)
    assert "Chain of 5 · int4 draft" not in set(table["Method"])
    assert "DynaTree · int4 draft · staged" in set(table["Method"])
