"""book.memory, book.phases and book.notes: the numbers chapters 07 and 03 glue into their prose, and the data
note under every table, on hand-made rows and runs whose answers are known."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from dynatree_lib.book import memory, notes, phases, research, tables
from dynatree_lib.methods.base import Linear, label
from dynatree_lib.methods.streaming import Streaming
from test_tables import AR, rows


def test_streaming_numbers_name_the_best_and_worst_cache():
    lin = Linear(6)
    df = rows({"a": {AR: 1.0, lin: 1.2, Streaming(lin, cache_size=64): 0.6, Streaming(lin, cache_size=128): 1.32,
                     Streaming(AR, cache_size=64): 0.9}})
    st = tables.streaming_table(df)
    numbers = memory.streaming_numbers(st)
    assert numbers["best"] == pytest.approx(1.1) and numbers["best_cache"] == 128
    assert numbers["best_method"].data == memory.inline_code(label(lin)).data
    assert numbers["worst"] == pytest.approx(0.5) and numbers["worst_cache"] == 64
    assert numbers["caches"] == "64, 128" and numbers["lengths"] == "32" and numbers["compressions_max"] == 3
    assert numbers["exact"] == 1.0
    speed, compressions = memory.streaming_figures(st)
    assert [(s.y0, s.y1) for s in speed.layout.shapes] == [(1.0, 1.0)]  # the unstreamed method's speed
    assert sum(len(t.x) for t in compressions.data) == len(st)
    with pytest.raises(ValueError, match="no streaming"):
        memory.streaming_numbers(st.iloc[:0])


def test_int8_numbers_give_bytes_in_mib_and_the_speed_range():
    lin = Linear(6)
    base = rows({"a": {AR: 1.0, lin: 1.2}}, target_bytes=3 * 2**30)
    int8 = rows({"a": {AR: 1.0, lin: 1.5}}, variant="int8", target_bytes=600 * 2**20)
    int8["tokens_per_s"] = int8["tokens_per_s"] / 2
    q = tables.int8_table(pd.concat([base, int8]))
    numbers = memory.int8_numbers(q)
    assert (numbers["base"], numbers["int8"]) == ("3.0 GiB", "600 MiB")
    assert numbers["speed_low"] == pytest.approx(0.5) and numbers["speed_high"] == pytest.approx(7.5 / 12)
    assert numbers["methods"] == 2 and numbers["saving"] == pytest.approx(1 - 600 / 3072)
    assert {t.name for t in memory.int8_figure(q).data} == {"as loaded", "int8"}
    assert memory.research_numbers()["int8_saving"] == research.INT8["memory_saving"]


def _run(wall_s: float, rounds: int, tokens: list[int], draft_s: float = 0.0):
    trace = pd.DataFrame({"draft_s": [draft_s] * rounds})
    stats = {"wall_s": wall_s, "rounds": rounds, "tokens_per_round": len(tokens) / rounds, "drafted_nodes": 4 * rounds,
             "ttft_s": 0.1, "draft_s": draft_s * rounds, "verify_s": 0.1 * rounds, "commit_s": 0.0,
             "tokens_per_s": len(tokens) / wall_s, "draft_forwards": rounds}
    return SimpleNamespace(stats=stats, token_ids=tokens, trace_frame=lambda: trace)


def test_phase_table_and_its_numbers():
    tokens = list(range(12))
    runs = {"AR": _run(1.2, 12, tokens), "tree": _run(0.4, 3, tokens, 0.05), "chain": _run(0.6, 4, tokens, 0.02)}
    table = phases.phase_table(runs)
    assert table.attrs["ar_step_ms"] == pytest.approx(100.0)
    assert table.loc["tree", "speedup"] == pytest.approx(3.0) and table.loc["tree", "tokens/round"] == 4.0
    assert table.loc["tree", "draft %"] == pytest.approx(100 * 0.05 / 0.15)
    assert table["match_ar"].all()
    numbers = phases.phase_numbers(table)
    assert numbers["tokens_min"] == 3.0 and numbers["tokens_max"] == 4.0 and numbers["ar_step_ms"] == pytest.approx(100.0)
    versus = phases.versus_numbers(table, "tree", "chain")
    assert versus["speed"] == pytest.approx(1.5) and versus["chain_tokens"] == 3.0
    with pytest.raises(ValueError, match="no run of"):
        phases.versus_numbers(table, "tree", "Linear(k=9)")
    with pytest.raises(ValueError, match="needs an AR run"):
        phases.phase_table({"tree": runs["tree"]})
    beside = phases.research_beside(table)
    assert beside.loc["tree", "research family"] == "-" and beside["speedup here"].tolist() == table["speedup"].tolist()


def test_no_bf16_numbers_and_table():
    from dynatree_lib import DynaTree, HFAssisted
    from dynatree_lib.book import hardware

    spec = {pid: {AR: 1.0, DynaTree(draft_bits=4): s, HFAssisted(draft_bits=4): 0.8, DynaTree(staged=False): 0.7}
            for pid, s in (("HumanEval/10", 0.9), ("HumanEval/11", 0.8), ("prose/x", 1.0))}
    df = rows(spec, n=128).assign(cpu="AMD EPYC", ttft_s=0.3, wall_s=1.0)
    numbers = hardware.no_bf16_numbers(df)
    assert numbers["lead"] == pytest.approx(0.9) and numbers["lead_worst"] == pytest.approx(0.8)
    assert (numbers["peer"], numbers["shipped"]) == (pytest.approx(0.8), pytest.approx(0.7))
    assert numbers["fastest"] == "Plain decoding" and numbers["fastest_speedup"] == 1.0
    assert numbers["prefill_share"] == pytest.approx(0.3) and numbers["cpu"] == "AMD EPYC"
    assert list(hardware.no_bf16_table(df)["Method"])[0] == "Plain decoding"
    with pytest.raises(ValueError, match="no rows of"):
        hardware.no_bf16_numbers(df[df["method"] != label(DynaTree(staged=False))])


@pytest.mark.parametrize("flags, says", [([True, None], "(with bf16 arithmetic)"),
                                         ([False, False], "(without bf16 arithmetic)"),
                                         ([True, False], "(with and without bf16 arithmetic)"), ([None, None], None)])
def test_the_data_note_says_whether_the_cpu_multiplies_bf16(flags, says):
    df = pd.DataFrame({"cpu": ["AMD EPYC"] * 2, "cpu_bf16": flags, "git_commit": ["abc"] * 2})
    note = notes.data_note(df)
    assert "CPU AMD EPYC" in note
    assert (says in note) if says else "bf16 arithmetic" not in note


def test_the_plan_note_counts_prompts_in_words():
    assert "; the first humaneval prompt;" in notes.plan_note("ablation")  # one prompt, not "the first 1"
    assert "; the first 2 humaneval prompts;" in notes.plan_note("methods")
