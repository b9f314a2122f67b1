"""book.engines: llama.cpp's rows beside ours, each engine's speedup over its own plain decoding."""
import math

import pandas as pd
import pytest

from dynatree_lib.book.engines import engines_numbers, engines_table


def llama_rows():
    rows = []
    for prompt, plain_tps in (("HumanEval/10", 20.0), ("prose/1", 10.0)):
        for config, factor, text in (("plain", 1.0, "x = 1"), ("draft", 0.5, "x = 1"), ("ngram-mod", 1.1, "x = 2")):
            rows.append(dict(config=config, prompt_id=prompt, max_new_tokens=128, tokens_per_s=plain_tps * factor,
                             decode_tokens_per_s=2 * plain_tps * factor, acceptance=0.5, output=text))
    return pd.DataFrame(rows)


def our_rows():
    rows = []
    for prompt, ar_tps in (("HumanEval/10", 4.0), ("prose/1", 4.0)):
        for method, pair, tps in (("AR", "p", ar_tps), ("DynaTree(draft_bits=4)", "p", 2.5 * ar_tps),
                                  ("AR", "p+int4", 3 * ar_tps), ("DynaTree(draft_bits=4)", "p+int4", 4 * ar_tps)):
            own = tps / (ar_tps if pair == "p" else 3 * ar_tps)
            rows.append(dict(method=method, pair=pair, prompt_id=prompt, max_new_tokens=128, tokens_per_s=tps,
                             speedup_vs_ar=own, match_ar=True))
    return pd.DataFrame(rows)


def test_engines_table_sets_both_engines_on_one_scale():
    table = engines_table(llama_rows(), our_rows(), 128)
    assert list(table["Tokens/s"]) == sorted(table["Tokens/s"], reverse=True)  # fastest first
    ours = table[table["Engine"] != "llama.cpp"].set_index("Weights")
    assert ours.loc["int4 target, int4 draft", "Over own plain"] == pytest.approx(4 / 3)
    assert ours.loc["bf16 target, int4 draft", "Over own plain"] == pytest.approx(2.5)
    # per prompt over llama.cpp's plain decoding: 16/20 and 16/10 -> median 1.2
    assert ours.loc["int4 target, int4 draft", "Over llama.cpp plain"] == pytest.approx(1.2)
    llama = table[table["Engine"] == "llama.cpp"].set_index("Configuration")
    assert llama.loc["0.5B draft, its defaults", "Over own plain"] == pytest.approx(0.5)
    assert llama.loc["n-gram drafting (mod)", "Same as own plain"] == 0  # its text differs from plain's
    assert llama.loc["plain decoding", "Same as own plain"] == 1


def test_engines_table_refuses_a_missing_length():
    with pytest.raises(ValueError, match="both engines at 512"):
        engines_table(llama_rows(), our_rows(), 512)


def test_engines_numbers_read_the_table():
    n = engines_numbers(engines_table(llama_rows(), our_rows(), 128))
    assert n["llama_plain_tps"] == pytest.approx(15.0)  # median of 20 and 10
    assert n["llama_best_spec"] == pytest.approx(1.1)  # n-gram drafting beats the draft's 0.5x
    assert n["ours_best_tps"] == pytest.approx(16.0) and n["ours_over_llama"] == pytest.approx(1.2)
    assert n["int4_own"] == pytest.approx(4 / 3)  # the int4 target's DynaTree over its own plain decoding
    bf16_only = our_rows().query("pair == 'p'")
    assert math.isnan(engines_numbers(engines_table(llama_rows(), bf16_only, 128))["int4_own"])  # none stored
