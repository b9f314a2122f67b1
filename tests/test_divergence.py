"""book.divergence: where stored bf16 runs leave plain decoding, read from the rows' own columns."""
import math

import pandas as pd
import pytest

from dynatree_lib.book import divergence
from dynatree_lib.book.divergence import divergence_table, shared_flips


def rows():
    r = lambda method, prompt, same, first, ppl: dict(  # noqa: E731
        method=method, prompt_id=prompt, max_new_tokens=128, match_ar=same, first_divergence=first, perplexity=ppl)
    return pd.DataFrame([
        r("AR", "a", True, -1, 2.0), r("AR", "b", True, -1, 4.0), r("AR", "c", True, -1, 3.0),
        r("Tree", "a", False, 15, 1.8), r("Tree", "b", True, -1, 4.0), r("Tree", "c", False, 40, 3.3),
        r("Chain", "a", False, 15, 2.2), r("Chain", "b", True, -1, 4.0), r("Chain", "c", False, 70, 3.0),
    ])


def test_divergence_table_reads_identity_position_and_perplexity_ratio():
    table = divergence_table(rows(), 128).set_index("method")
    tree = table.loc["Tree"]
    assert tree["runs"] == 3 and tree["identical"] == pytest.approx(1 / 3)
    assert tree["first_divergence"] == 27.5  # median of 15 and 40
    assert tree["perplexity_ratio"] == pytest.approx((0.9 + 1.1) / 2) and tree["worse"] == 0.5
    assert table.loc["Chain", "perplexity_ratio"] == pytest.approx(1.05)


def test_shared_flips_counts_prompts_where_every_diverging_method_parts_at_one_position():
    assert shared_flips(rows(), 128) == (1, 2)  # prompt a: both at 15; prompt c: 40 and 70


def test_no_plain_rows_is_refused():
    with pytest.raises(ValueError, match="no plain-decoding"):
        divergence_table(rows()[lambda d: d["method"] != "AR"], 128)


def live():
    """A float32/bf16 `quality.compare_to_ar` table in miniature: prompt p, AR and two methods, one diverged."""
    r = lambda method, same, first, gap, ppl, ar=None, mt=None: dict(  # noqa: E731
        prompt_id="p", method=method, dtype="bfloat16", new_tokens=8, match_ar=same, first_divergence=first,
        ar_token=ar, method_token=mt, gap_at_divergence=gap / 8, gap_ulps_at_divergence=gap, min_gap_ulps=0.5,
        perplexity=ppl, tokens_per_round=2.0, token_ids=[1] * 8)
    return pd.DataFrame([r("AR", True, -1, math.nan, 2.0), r("Linear(k=3)", True, -1, math.nan, 2.0),
                         r("FixedTree()", False, 5, 1.5, 2.5, 11, 12)])


def flips():
    r = lambda method, prompt, first, gap, ppl, rep: dict(  # noqa: E731
        prompt_id=prompt, method=method, max_new_tokens=128, dtype="bfloat16", first_divergence=first,
        gap_logits=gap / 8, gap_spacings=gap, ar_token=None if first < 0 else 65,
        method_token=None if first < 0 else 66,
        repeat4_ar=0.10, repeat4_method=rep, perplexity_ar=2.0, perplexity_method=ppl)
    return pd.DataFrame([r("DynaTree()", "a", 15, 0.5, 1.8, 0.10), r("DynaTree()", "b", -1, math.nan, 2.0, 0.10),
                         r("DynaTree(draft_bits=4)", "a", 15, 0.5, 2.2, 0.30),
                         r("DynaTree(draft_bits=4)", "b", 40, 2.0, 2.4, 0.20)])


def test_exactness_summary_and_identical_count():
    table = live()
    assert divergence.identical_count(table) == "2 of 3"
    summary = divergence.exactness_summary(table).set_index("method")
    assert summary.loc["FixedTree()", "match_ar"] == 0 and summary.loc["FixedTree()", "first_divergence"] == 5
    assert summary.loc["Linear(k=3)", "match_ar"] == 1 and summary.loc["AR", "tokens_per_round"] == 2.0


def test_check_exact_allows_only_near_ties():
    assert len(divergence.check_exact(live())) == 1  # 1.5 ulps: a near-tie
    wide = live().assign(gap_ulps_at_divergence=[math.nan, math.nan, 500.0])
    with pytest.raises(ValueError, match="away from a near-tie"):
        divergence.check_exact(wide)
    with pytest.raises(ValueError, match="away from a near-tie"):  # no gap known is no near-tie either
        divergence.check_exact(live().assign(gap_ulps_at_divergence=math.nan))


def test_live_values_and_rows():
    values = divergence.live_values(live())
    assert values == {"live_identical": "2 of 3", "live_flip_gaps": "1.5 to 1.5 spacings",
                      "live_path_gaps": "0.5 to 0.5"}
    same = live()[lambda d: d["match_ar"]]
    assert divergence.live_values(same)["live_flip_gaps"] == "nowhere: none diverged"
    rows = divergence.live_rows(live())
    assert "token_ids" not in rows and rows["ar_token"].tolist() == ["", "", "11"]  # no tokenizer: the id


def test_perplexity_table_and_exact_rows():
    table = divergence.perplexity_table(live().assign(perplexity=2.0), live(), "bfloat16")
    assert list(table.columns) == ["Method", "float32", "bfloat16", "bfloat16 matches AR"]
    assert table["bfloat16"].tolist() == [2.0, 2.0, 2.5] and table["bfloat16 matches AR"].tolist() == [1, 1, 0]
    full = pd.DataFrame({"method": ["AR", "DynaTree()"], "prompt_id": ["p", "p"], "max_new_tokens": [128, 128],
                         "match_ar": [True, True], "first_divergence": [-1, -1]})
    assert divergence.exact_rows(full)["Prompt"].tolist() == ["p"]


def test_flip_rows_show_only_the_runs_that_diverged_beside_the_stored_run():
    speed = pd.DataFrame({"method": ["DynaTree()", "DynaTree(draft_bits=4)", "DynaTree(draft_bits=4)"],
                          "prompt_id": ["a", "a", "b"], "max_new_tokens": 128, "first_divergence": [15, -1, 38]})
    rows = divergence.flip_rows(flips(), speed=speed)
    assert rows["Prompt"].tolist() == ["a", "a", "b"]
    assert rows["Flip at (timed run)"].tolist() == ["15 (15)", "15 (-1)", "40 (38)"]
    assert rows["Perplexity ratio"].tolist() == pytest.approx([0.9, 1.1, 1.2])
    assert rows["Tokens (AR / method)"].tolist() == ["65 / 66"] * 3
    assert rows["Repeated 4-grams (AR / method)"].tolist() == ["10.0% / 10.0%", "10.0% / 30.0%", "10.0% / 20.0%"]
    assert divergence.flip_rows(flips())["Flip at"].tolist() == [15, 15, 40]  # no speed rows: no timed run
    assert ":name: tab-08-flips" in divergence.flips_markdown(flips(), speed=speed)


def test_flip_values_summarise_gap_perplexity_and_repetition():
    values = divergence.flip_values(flips())
    assert values["flip_count"] == "3 of 4" and values["flip_gap_max"] == 2.0 and values["flip_prompts"] == 2
    assert values["flip_ppl_ratio"] == pytest.approx(1.1) and values["flip_worse"] == "2 of 3"
    assert values["flip_rep_ar"] == "10.0%" and values["flip_rep_method"] == "20.0%"
    assert values["flip_rep_more"] == "2 of 3"
    assert values["flip_length"] == "128" and values["flip_rep_diff"] == "+10.0"  # median of 0, +20, +10 points
    with pytest.raises(ValueError, match="no run in the flip table left plain decoding"):
        divergence.flip_values(flips()[lambda d: d["first_divergence"] < 0])


def test_speed_values_and_table():
    values = divergence.speed_values(rows(), 128, "Tree", "Chain")
    assert values["div_identical_lead"] == "33%" and values["div_identical_peer"] == "33%"
    assert values["div_ppl_lead"] == pytest.approx(1.0) and values["div_worse_lead"] == "50%"
    assert (values["div_shared"], values["div_prompts"]) == (1, 2)
    assert ":name: tab-08-divergence" in divergence.divergence_markdown(rows(), 128)
