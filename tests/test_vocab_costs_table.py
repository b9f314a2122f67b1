"""book/vocab_costs.py: ratios against the full vocabulary, position-weighted agreement, and refusals."""
import pandas as pd
import pytest

from dynatree_lib.book.vocab_costs import vocab_figure, vocab_table


def _rows():
    rows = []
    for k, scale in (("full", 1.0), ("32768", 0.8), ("16384", 0.7)):
        for n, base in ((1, 0.05), (16, 0.08)):
            rows.append({"measure": "draft_level_cost", "K": k, "nodes": n, "median_s": base * scale})
        for text, positions, agree in (("a", 100, 0.9), ("b", 300, 0.5)):
            rows.append({"measure": "acceptance", "K": k, "text": text, "positions": positions,
                         "target_outside_K": 0.0 if k == "full" else 0.01,
                         "draft_top1_agrees": agree - (0.0 if k == "full" else 0.02)})
    return pd.DataFrame(rows)


def test_ratios_and_weighted_agreement():
    table = vocab_table(_rows()).set_index("K")
    assert list(table.index) == ["full", "32768", "16384"]
    assert table.loc["32768", "level_vs_full_1"] == pytest.approx(0.8)
    assert table.loc["16384", "level_vs_full_16"] == pytest.approx(0.7)
    assert table.loc["full", "draft_top1_agrees"] == pytest.approx((100 * 0.9 + 300 * 0.5) / 400)
    assert table.loc["16384", "agreement_change"] == pytest.approx(-0.02)
    assert len(vocab_figure(_rows()).data) == 3  # two node counts and the agreement line


def test_refuses_rows_without_the_full_vocabulary_or_of_another_kind():
    with pytest.raises(ValueError, match="full vocabulary"):
        vocab_table(_rows().query("K != 'full'"))
    with pytest.raises(ValueError, match="lacks column"):
        vocab_table(pd.DataFrame({"method": ["AR"]}))
