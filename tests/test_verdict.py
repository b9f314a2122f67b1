"""The intro's verdict (dynatree_lib.book.verdict, scripts/headline.py) on hand-made rows with known answers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynatree_lib.book import verdict
from test_tables import AR, rows

LEAD, CHAIN, PEER, SHIPPED, PEER_SHIPPED = (c.method for c in verdict.CONTENDERS)
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "headline.py"


def speed_rows() -> pd.DataFrame:
    """Two code prompts and one prose prompt at 128 and 512 tokens; speedups chosen so every median is known."""
    at128 = {"HumanEval/1": {AR: 1.0, LEAD: 2.0, CHAIN: 1.6, PEER: 1.6, SHIPPED: 1.5, PEER_SHIPPED: 1.0},
             "HumanEval/2": {AR: 1.0, LEAD: 2.4, CHAIN: 2.0, PEER: 2.0, SHIPPED: 1.2, PEER_SHIPPED: 0.8},
             "prose/a": {AR: 1.0, LEAD: 1.8, CHAIN: 1.8, PEER: 1.5, SHIPPED: 1.1, PEER_SHIPPED: 0.5}}
    at512 = {"HumanEval/1": {AR: 1.0, LEAD: 4.0, CHAIN: 2.0, PEER: 2.0, SHIPPED: 2.0},
             "HumanEval/2": {AR: 1.0, LEAD: 3.0, CHAIN: 2.0, PEER: 3.0, SHIPPED: 2.2},
             "prose/a": {AR: 1.0, LEAD: 3.3, CHAIN: 3.0, PEER: 2.2, SHIPPED: 1.8}}
    meta = dict(dtype="bfloat16", device="cpu", cpu="test cpu", torch_threads=2, git_commit="abcdef123",
                date_utc="2026-12-01T00:00:00")
    return pd.concat([rows(at128, n=128), rows(at512, n=512)], ignore_index=True).assign(**meta)


def test_summary_sorts_and_takes_per_prompt_ratios():
    table = verdict.summary(speed_rows(), 512).set_index("Method")
    assert list(table.index[:2]) == [verdict.LEAD.name, verdict.PEER.name]  # 3.3x, then 2.2x
    lead = table.loc[verdict.LEAD.name]
    assert lead["Speedup"] == pytest.approx(3.3) and lead["Worst prompt"] == pytest.approx(3.0)
    # over the same-draft peer per prompt: 4/2, 3/3, 3.3/2.2 -> median 1.5
    assert lead["Over transformers, same draft"] == pytest.approx(1.5)
    assert lead["Prompts"] == 3 and lead["Configuration"] == verdict.LEAD.label
    with pytest.raises(ValueError, match=r"no speed rows at 64 new tokens; stored: \[128, 512\]"):
        verdict.summary(speed_rows(), 64)


def test_numbers_and_sentences():
    n = verdict.numbers(speed_rows())
    assert n["lead_long"] == pytest.approx(3.3) and n["lead_short"] == pytest.approx(2.0)
    assert n["lead_vs_chain_long"] == pytest.approx(1.5)  # per prompt 2.0, 1.5, 1.1
    assert n["best_kind"] == "code" and n["best_kind_vs_chain"] == pytest.approx(1.75)  # 2.0 and 1.5
    assert n["worst_kind"] == "prose" and n["worst_kind_vs_chain"] == pytest.approx(1.1)
    assert n["shipped_vs_peer_short"] == pytest.approx(1.5)  # 1.5, 1.5, 2.2
    assert n["fastest_short"] == n["fastest_long"] == verdict.LEAD.name  # 2.0x and 3.3x: first at both lengths
    text = verdict.verdict(n)
    assert "3.30x as fast as plain decoding at 512 new tokens (2.00x at 128)" in text
    assert "largest on code (1.75x) and smallest on prose (1.10x)" in text
    assert "spends 0.06 draft forwards per committed token at 128 tokens against transformers' 0.06" in text  # 8/128
    # no shipped-draft peer at 512 in these rows: that number stops at 128 rather than print "nanx"
    assert n["shipped_long"] == pytest.approx(2.0) and "nan" not in text
    assert "(1.20x at 128 tokens, 2.00x at 512) but leads" in text and "with that draft by more (1.50x at 128 " \
        "tokens)." in text


def test_shipped_numbers_at_the_long_length_where_its_peer_was_measured():
    peer = rows({"HumanEval/1": {PEER_SHIPPED: 1.0}, "HumanEval/2": {PEER_SHIPPED: 2.0},
                 "prose/a": {PEER_SHIPPED: 1.2}}, n=512)
    n = verdict.numbers(pd.concat([speed_rows(), peer], ignore_index=True))
    assert n["shipped_vs_peer_long"] == pytest.approx(1.5)  # per prompt 2.0/1.0, 2.2/2.0, 1.8/1.2
    assert "with that draft by more (1.50x at 128 tokens, 1.50x at 512)." in verdict.verdict(n)


def other_cpu_rows() -> pd.DataFrame:
    """The contenders at 128 tokens on three prompts, plain decoding timed three times per prompt (as
    `--reference-repeats 3` stores it), with the timings `tables.round_costs` reads, and a 512-token row on another
    CPU that 128-token numbers must not see."""
    at128 = {"HumanEval/1": {LEAD: 2.0, PEER: 1.6, SHIPPED: 1.5, CHAIN: 1.6, PEER_SHIPPED: 1.0},
             "HumanEval/2": {LEAD: 2.4, PEER: 2.0, SHIPPED: 1.2, CHAIN: 2.4, PEER_SHIPPED: 0.8},
             "prose/a": {LEAD: 1.8, PEER: 1.5, SHIPPED: 1.1, CHAIN: 2.0, PEER_SHIPPED: 1.1}}
    ar = pd.concat([rows({p: {AR: 1.0} for p in at128}, n=128).assign(repeat=r) for r in range(3)])
    table = pd.concat([ar, rows(at128, n=128)], ignore_index=True).assign(
        cpu="other cpu", wall_s=lambda t: 12.8 / t["speedup"], draft_s=0.4, verify_s=1.0, commit_s=0.0)
    table.loc[table["method"] == "AR", ["rounds", "ttft_s"]] = [10, 0.64]  # a plain step: 1.0 s / 10 rounds
    other_length = rows({"HumanEval/1": {AR: 1.0, LEAD: 9.0}}, n=512).assign(cpu="elsewhere")
    return pd.concat([table, other_length], ignore_index=True)


def test_machine_numbers_from_another_cpus_table_with_repeated_references():
    n = verdict.machine_numbers(other_cpu_rows(), 128)
    assert n["cpu"] == "other cpu" and n["prompts"] == 3 and n["reference_runs"] == 3
    assert n["lead"] == pytest.approx(2.0) and n["shipped"] == pytest.approx(1.2)
    assert n["lead_vs_peer"] == pytest.approx(1.2) and n["lead_vs_peer_min"] == pytest.approx(1.2)  # 1.25, 1.2, 1.2
    assert n["prefill_share"] == pytest.approx(0.05)  # 0.64 s of 12.8 s
    assert n["tokens_per_forward"] == pytest.approx(3.0)  # rows(): 1 + speedup, median of 3.0, 3.4, 2.8
    assert n["verify_steps"] == pytest.approx(2.5)  # 1.0 s over 4 rounds against 0.1 s a plain step
    assert n["lead_vs_chain"] == pytest.approx(1.0)  # 1.25, 1.0, 0.9
    assert n["shipped_vs_peer"] == pytest.approx(1.5)  # 1.5, 1.5, 1.0
    table = other_cpu_rows()
    without = table[~table["method"].isin([verdict.CHAIN.label, verdict.PEER_SHIPPED.label])]
    assert np.isnan(verdict.machine_numbers(without, 128)["lead_vs_chain"])  # a table without the chain


def test_figure_has_a_button_per_kind_and_a_band_per_line():
    fig = verdict.figure(speed_rows())
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["all prompts", "code", "prose"]
    lines = [t for t in fig.data if t.mode == "lines+markers" and t.visible]
    assert {t.name for t in lines} == {c.name for c in verdict.CONTENDERS}
    lead = next(t for t in lines if t.name == verdict.LEAD.name)
    assert list(lead.x) == [128, 512] and list(lead.y) == pytest.approx([2.0, 3.3])
    # each button shows a line and a band per contender of its own kind of text, and nothing else
    total = len(fig.data)
    for i, b in enumerate(buttons):
        shown = b.args[0]["visible"]
        assert len(shown) == total and sum(shown) == 2 * len(verdict.CONTENDERS)
        assert shown[i * 2 * len(verdict.CONTENDERS)] is True


def test_headline_script_writes_page_and_figure(tmp_path):
    speed_rows().to_csv(tmp_path / "speed.csv", index=False)
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "h.md"), "--results", str(tmp_path)], check=True)
    text = (tmp_path / "h.md").read_text()
    assert text.startswith("With the int4 draft, DynaTree decodes 3.30x")
    assert ":file: h_figure.html" in text and ":name: headline-table" in text
    assert f"| {verdict.LEAD.name} | 3.30x | 3.00x | 1.50x |" in text
    assert "3 prompts (2 code, 1 prose)" in text and "commit abcdef1, 2026-12-01" in text
    figure = (tmp_path / "h_figure.html").read_text()
    assert figure.startswith('<script src="../_static/plotly.min.js"></script>') and "verdict-figure" in figure
    assert "On another CPU" not in text  # no second machine's table stored
    other_cpu_rows().to_csv(tmp_path / "speed_other_cpu.csv", index=False)
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "h.md"), "--results", str(tmp_path)], check=True)
    assert ("**On another CPU.** Timed again on a second machine (other cpu, 3 of the same prompts, 128 new tokens), "
            "DynaTree with the int4 draft runs 2.00x as fast as plain decoding and 1.20x as fast as transformers' "
            "assisted generation") in (tmp_path / "h.md").read_text()
    printed = subprocess.run([sys.executable, str(SCRIPT), "--print", "--results", str(tmp_path)], check=True,
                             capture_output=True, text=True).stdout
    assert "3.30x" in printed and verdict.LEAD.name in printed
