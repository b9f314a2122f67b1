"""book.divergence: where stored bf16 runs leave plain decoding, read from the rows' own columns."""
import pandas as pd
import pytest

from dynatree_lib.book.divergence import divergence_table, shared_flips


def rows():
    r = lambda method, prompt, same, first, ppl: dict(  # noqa: E731
        method=method, prompt_id=prompt, max_new_tokens=128, match_ar=same, first_divergence=first, perplexity=ppl)
    return pd.DataFrame([
        r("AR", "a", True, -1, 2.0), r("AR", "b", True, -1, 4.0), r("AR", "c", True, -1, 3.0),
        r("Tree", "a", "False", 15, 1.8), r("Tree", "b", "True", -1, 4.0), r("Tree", "c", False, 40, 3.3),
        r("Chain", "a", False, 15, 2.2), r("Chain", "b", True, -1, 4.0), r("Chain", "c", False, 70, 3.0),
    ])


def test_divergence_table_reads_identity_position_and_perplexity_ratio():
    table = divergence_table(rows(), 128).set_index("method")
    tree = table.loc["Tree"]
    assert tree["runs"] == 3 and tree["identical"] == pytest.approx(1 / 3)  # "False" strings read as False
    assert tree["first_divergence"] == 27.5  # median of 15 and 40
    assert tree["perplexity_ratio"] == pytest.approx((0.9 + 1.1) / 2) and tree["worse"] == 0.5
    assert table.loc["Chain", "perplexity_ratio"] == pytest.approx(1.05)


def test_shared_flips_counts_prompts_where_every_diverging_method_parts_at_one_position():
    assert shared_flips(rows(), 128) == (1, 2)  # prompt a: both at 15; prompt c: 40 and 70


def test_no_plain_rows_is_refused():
    with pytest.raises(ValueError, match="no plain-decoding"):
        divergence_table(rows()[lambda d: d["method"] != "AR"], 128)
