"""Spec-Bench: the stored question file, the prompt choice, the table in Spec-Bench's layout, the benchmark script."""
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from dynatree_lib.bench.prompts import data_dir
from dynatree_lib.bench.spec_bench import TASKS, spec_bench_prompts, spec_bench_questions, task_of_id
from dynatree_lib.book.spec_bench import (draft_context_numbers, draft_context_table, draft_prefill_numbers,
                                          prefill_numbers, reference_table, spec_bench_layout, spec_bench_numbers,
                                          spec_bench_reference, spec_bench_table, spec_bench_versus,
                                          spec_bench_wide, speedup_table, tokens_table, versus_table)
from dynatree_lib.methods import Autoregressive, DynaTree, HFAssisted, Linear, label
from dynatree_lib.methods import names

ROOT = Path(__file__).resolve().parents[1]


def test_question_file_has_spec_benchs_six_tasks():
    questions = spec_bench_questions()
    assert len(questions) == 480 and questions["question_id"].is_unique
    assert questions["task"].value_counts().to_dict() == {t: 80 for t in TASKS}


def test_prompts_per_task_and_stable_ids():
    prompts = spec_bench_prompts(5)
    assert prompts["task"].value_counts().to_dict() == {t: 5 for t in TASKS}
    # Spread over each task in file order: MT-bench's five come from five of its eight categories.
    assert list(prompts["id"][:5]) == [f"spec_bench/mt_bench/{q}" for q in (81, 97, 113, 129, 145)]
    assert list(prompts[prompts["task"] == "rag"]["question_id"]) == [481, 497, 513, 529, 545]
    assert prompts[prompts["task"] == "mt_bench"]["category"].nunique() == 5
    assert prompts.equals(spec_bench_prompts(5))
    first = prompts.iloc[0]
    assert first["prompt"] == [{"role": "user", "content": first["question"]}]
    assert first["question"].startswith("Compose an engaging travel blog post about a recent trip to Hawaii")
    assert all(task_of_id(i) == t for i, t in zip(prompts["id"], prompts["task"]))


def test_a_subset_of_tasks_in_the_order_asked():
    prompts = spec_bench_prompts(2, ["rag", "qa"])
    assert list(prompts["id"]) == ["spec_bench/rag/481", "spec_bench/rag/521", "spec_bench/qa/321", "spec_bench/qa/361"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(tasks=["coding"]), "unknown Spec-Bench task"),
    (dict(tasks=[]), "unknown Spec-Bench task"),
    (dict(per_task=81), "has 80 questions"),
    (dict(per_task=0), "per_task must be an integer >= 1"),
])
def test_bad_requests_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        spec_bench_prompts(**kwargs)


def test_a_changed_question_file_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "prompts" / "spec_bench"
    folder.mkdir(parents=True)
    text = (data_dir() / "prompts" / "spec_bench" / "question.jsonl").read_text(encoding="utf-8")
    (folder / "question.jsonl").write_text(text.replace("Hawaii", "Hawai'i", 1), encoding="utf-8")
    monkeypatch.setenv("DYNATREE_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        spec_bench_prompts(1)


def test_prompt_ids_name_their_task():
    assert task_of_id("spec_bench/math_reasoning/401") == "math_reasoning"
    for bad in ("HumanEval/0", "spec_bench/coding/1", "spec_bench/qa"):
        with pytest.raises(ValueError, match="not a Spec-Bench prompt id"):
            task_of_id(bad)


def rows(method, task, qid, ratio, tokens_per_round, rounds, match=True, length=128):
    return dict(method=method, prompt_id=f"spec_bench/{task}/{qid}", max_new_tokens=length, speedup_vs_ar=ratio,
                speedup=ratio, tokens_per_round=tokens_per_round, rounds=rounds, match_ar=match)


@pytest.fixture
def synthetic():
    data = []
    for q, task in enumerate(("qa", "qa", "qa", "rag"), start=1):
        data.append(rows("AR", task, q, 1.0, 1.0, 128))
    # Tree on qa: per-question ratios 2, 3 (the median of two repeats, 2.8 and 3.2) and 5 -> median 3.0
    data += [rows("Tree", "qa", 1, 2.0, 4.0, 32), rows("Tree", "qa", 2, 2.8, 2.0, 64),
             rows("Tree", "qa", 2, 3.2, 2.0, 64, match=False), rows("Tree", "qa", 3, 5.0, 8.0, 16),
             rows("Tree", "rag", 4, 1.5, 2.0, 64)]
    data += [rows("Peer", "qa", 1, 1.0, 2.0, 64), rows("Peer", "qa", 2, 2.0, 2.0, 64),
             rows("Peer", "qa", 3, 2.5, 2.0, 64), rows("Peer", "rag", 4, 3.0, 2.0, 64)]
    data.append(rows("Tree", "qa", 1, 9.0, 9.0, 1, length=512))  # another length: never in the 128-token table
    return pd.DataFrame(data)


def test_table_medians_pooled_tokens_and_exact_share(synthetic):
    table = spec_bench_table(synthetic).set_index(["method", "task"])
    assert list(dict.fromkeys(table.index.get_level_values(0))) == ["AR", "Tree", "Peer"]
    tree_qa = table.loc[("Tree", "qa")]
    assert tree_qa["questions"] == 3 and tree_qa["speedup"] == pytest.approx(3.0)
    # pooled: (128 + 128 + 128 + 128) committed tokens / (32 + 64 + 64 + 16) rounds
    assert tree_qa["tokens_per_round"] == pytest.approx(512 / 176)
    assert tree_qa["exact"] == pytest.approx(3 / 4)
    tree_all = table.loc[("Tree", "overall")]
    assert tree_all["questions"] == 4 and tree_all["speedup"] == pytest.approx((2.0 + 3.0) / 2)
    assert tree_all["exact"] == pytest.approx(4 / 5)
    assert table.loc[("AR", "rag"), "tokens_per_round"] == 1.0
    assert list(table.loc["Tree"].index) == ["qa", "rag", "overall"]


def test_layout_is_spec_benchs(synthetic):
    layout = spec_bench_layout(spec_bench_table(synthetic))
    assert list(layout.columns) == ["method", "qa", "rag", "overall", "exact"]
    tree = layout.set_index("method").loc["Tree"]
    assert tree["qa"] == "3.00x · 2.91" and tree["rag"] == "1.50x · 2.00" and tree["exact"] == "80%"


def test_wide_tables_split_spec_benchs_layout(synthetic):
    table = spec_bench_table(synthetic)
    speed = spec_bench_wide(table).set_index("method")
    assert list(speed.columns) == ["QA", "RAG", "Overall"] and speed.loc["Tree", "QA"] == 3.0
    tokens = spec_bench_wide(table, "tokens_per_round").set_index("method")
    assert tokens.loc["Tree", "QA"] == pytest.approx(512 / 176)


def test_versus_a_peer_per_task(synthetic):
    versus = spec_bench_versus(synthetic, "Tree", "Peer")
    # qa per question: 2/1, 3/2, 5/2.5 -> median 2.0; rag: 1.5/3 = 0.5; overall median of (2, 1.5, 2, 0.5)
    assert versus.to_dict() == pytest.approx({"qa": 2.0, "rag": 0.5, "overall": 1.75})
    with pytest.raises(ValueError, match="no rows of \\['Nope'\\]"):
        spec_bench_versus(synthetic, "Nope", "Peer")


def test_page_tables_and_numbers(synthetic):
    tree, peer = label(DynaTree(draft_bits=4)), label(HFAssisted(draft_bits=4))
    real = synthetic.replace({"method": {"Tree": tree, "Peer": peer}})
    cells = spec_bench_table(real)
    speed = speedup_table(cells).set_index("Method")
    assert list(speed.columns) == ["QA", "RAG", "Overall", "Identical to AR"]
    assert speed.loc["DynaTree · int4 draft", "QA"] == 3.0
    assert speed.loc["DynaTree · int4 draft", "Identical to AR"] == pytest.approx(4 / 5)
    assert tokens_table(cells).set_index("Method").loc["Plain decoding", "RAG"] == 1.0
    # the chain's pair is not stored: only the tree's row, under readable names
    over = versus_table(real, [(DynaTree(draft_bits=4), HFAssisted(draft_bits=4)),
                               (Linear(5, draft_bits=4), HFAssisted(draft_bits=4))])
    assert list(over["Method"]) == ["DynaTree · int4 draft over transformers assisted · int4 draft"]
    assert over.iloc[0][["QA", "RAG", "Overall"]].tolist() == pytest.approx([2.0, 0.5, 1.75])
    with pytest.raises(ValueError, match="none of the pairs"):
        versus_table(real, [(Linear(5), HFAssisted())])
    n = spec_bench_numbers(real, tree, peer)
    assert n["sb_vs_peer"] == pytest.approx(1.75) and n["sb_per_task"] == 1  # rag has one question
    assert (n["sb_vs_peer_min"], n["sb_vs_peer_min_task"]) == (pytest.approx(0.5), "RAG")
    assert n["sb_vs_peer_max_task"] == "question answering" and n["sb_ahead"] == "on 1 of 2 tasks"
    assert n["sb_lead"] == pytest.approx(2.5)
    # fastest per task: the tree on qa (3.0x), the peer on rag (3.0x)
    assert n["sb_fastest"] == ("question answering, DynaTree · int4 draft (3.00x); "
                               "RAG, transformers assisted · int4 draft (3.00x)")


def test_long_prompts_prefill_share_and_speedup_after_it():
    def row(task, qid, tokens, wall, ttft, ratio, committed, rounds):
        return dict(rows("Tree", task, qid, ratio, committed / rounds, rounds), prompt_tokens=tokens, wall_s=wall,
                    ttft_s=ttft, ar_wall_s=wall * ratio)
    # rag (prompts of 800 tokens): AR walls 2 x 20 = 40 and 1.5 x 20 = 30; after a 4 s prefill 36/16 and 26/16
    data = pd.DataFrame([row("rag", 1, 800, 20.0, 4.0, 2.0, 128, 32), row("rag", 2, 800, 20.0, 4.0, 1.5, 128, 32),
                         row("qa", 3, 50, 10.0, 1.0, 3.0, 128, 16), row("qa", 4, 60, 12.0, 1.0, 2.0, 128, 64)])
    n = prefill_numbers(data, "Tree")
    assert n["sb_long_tasks"] == "RAG" and n["sb_long_tokens"] == 800
    assert n["sb_long_share"] == pytest.approx(0.2) and n["sb_long_speedup"] == pytest.approx(1.75)
    assert n["sb_long_after"] == pytest.approx((36 / 16 + 26 / 16) / 2)
    # qa: (30 - 1) / 9 and (24 - 1) / 11
    assert n["sb_short_after"] == pytest.approx((29 / 9 + 23 / 11) / 2) and n["sb_short_speedup"] == 2.5
    assert n["sb_long_tokens_per_forward"] == 4.0 and n["sb_short_tokens_per_forward"] == pytest.approx(256 / 80)
    with pytest.raises(ValueError, match="both over and under 256"):
        prefill_numbers(data[data["prompt_id"].str.contains("qa")], "Tree")
    with pytest.raises(ValueError, match="no rows of Nope"):
        prefill_numbers(data, "Nope")


def test_draft_prefill_share_from_rows_that_time_it():
    data = pd.DataFrame([dict(method="Tree", prompt_id="spec_bench/rag/1", wall_s=20.0, draft_prefill_s=2.0),
                         dict(method="Tree", prompt_id="spec_bench/rag/2", wall_s=10.0, draft_prefill_s=0.5),
                         dict(method="AR", prompt_id="spec_bench/rag/1", wall_s=40.0, draft_prefill_s=float("nan"))])
    assert draft_prefill_numbers(data, "Tree") == {"sb_draft_prefill_min": 0.05, "sb_draft_prefill_max": 0.1,
                                                   "sb_draft_prefill_questions": 2}
    for method in ("AR", "Nope"):
        with pytest.raises(ValueError, match=f"no draft_prefill_s of {method}"):
            draft_prefill_numbers(data, method)


def test_draft_context_table_sets_each_window_beside_the_whole_prompt():
    def row(method, pid, wall, tokens, prefill, match=True, task="rag"):
        return dict(method=label(method), method_type=type(method).__name__, method_params=json.dumps(
            names.record(method)), prompt_id=f"spec_bench/{task}/{pid}", wall_s=wall, speedup=40.0 / wall,
            tokens_per_round=tokens, draft_prefill_s=prefill, match_ar=match, cpu="test cpu", max_new_tokens=128,
            rounds=10)
    lead, w128, w256 = (DynaTree(draft_bits=4, draft_context=w) for w in (None, 128, 256))
    data = pd.DataFrame([
        row(lead, 1, 20.0, 4.0, 2.0), row(lead, 2, 16.0, 5.0, 1.6, task="summarization"),
        row(w128, 1, 16.0, 3.0, 0.4), row(w128, 2, 20.0, 3.0, 0.4, match=False, task="summarization"),
        row(w256, 1, 18.0, 4.0, 0.8), row(w256, 2, 16.0, 5.0, 0.8, task="summarization"),
        row(DynaTree(draft_context=256), 1, 1.0, 9.0, 0.1),  # another draft: not a window of the lead
        row(Autoregressive(), 1, 40.0, 1.0, float("nan"))])
    table = draft_context_table(data, lead).set_index("Draft reads")
    assert list(table.index) == ["whole prompt", "last 256 tokens", "last 128 tokens"]
    assert list(table.columns) == ["Speedup", "Over whole prompt", "Summ.", "RAG", "Tokens per forward",
                                   "Draft prefill (s)", "Identical to AR"]
    assert table.loc["last 128 tokens", "Over whole prompt"] == pytest.approx(1.025)  # 20/16 and 16/20
    assert table.loc["last 128 tokens", "RAG"] == pytest.approx(1.25)
    assert table.loc["last 128 tokens", "Summ."] == pytest.approx(0.8)
    assert table.loc["whole prompt", "Speedup"] == pytest.approx((2.0 + 2.5) / 2)
    assert table.loc["last 128 tokens", "Tokens per forward"] == 3.0
    assert table.loc["last 256 tokens", "Draft prefill (s)"] == pytest.approx(0.8)
    assert table.loc["last 128 tokens", "Identical to AR"] == 0.5
    assert draft_context_table(data, "DynaTree(draft_bits=4)").equals(table.reset_index())  # a label works too
    n = draft_context_numbers(data, lead)
    assert n["dc_window"] == 256 and n["dc_over"] == pytest.approx((20 / 18 + 1) / 2)  # the faster window
    assert n["dc_tasks"] == "summarization and RAG" and n["dc_questions"] == 2 and n["dc_cpu"] == "test cpu"
    assert n["dc_over_rag"] == pytest.approx(20 / 18) and n["dc_prefill_whole"] == pytest.approx(1.8)
    with pytest.raises(ValueError, match="no rows of Linear"):
        draft_context_table(data, Linear(k=5))


def test_a_length_without_rows_is_refused(synthetic):
    with pytest.raises(ValueError, match="lengths stored: \\[128, 512\\]"):
        spec_bench_table(synthetic, 1000)


def test_reference_rows_are_the_published_rtx3090_table():
    ref = spec_bench_reference().set_index("method")
    assert ref.loc["EAGLE2", "overall"] == 2.19 and ref.loc["PLD", "summarization"] == 2.46
    assert {*TASKS, "mean_accepted_tokens", "overall", "device", "target_model"} <= set(ref.columns)
    shown = reference_table()
    assert list(shown.columns) == ["Method", "MT-bench", "Transl.", "Summ.", "QA", "Math", "RAG", "Overall",
                                   "Tokens per forward"]
    assert shown.set_index("Method").loc["EAGLE2", "Overall"] == 2.19
    assert set(ref["device"]) == {"NVIDIA GeForce RTX 3090"}


def script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import spec_bench
    finally:
        sys.path.pop(0)
    return spec_bench


def test_dry_run_lists_the_units_and_loads_nothing(capsys):
    script().main(["--dry-run", "--per-task", "2", "--tasks", "qa,rag"],
                  load=lambda: pytest.fail("a dry run loaded a model"))
    out = capsys.readouterr().out
    assert "spec_bench/qa/361" in out and "7 methods x 4 questions x 128 tokens = 28 units" in out


def test_script_end_to_end_on_a_tiny_chat_pair(tmp_path, capsys):
    from test_chat import WORDS, tokenizer
    from tiny import perturbed, tiny_model

    from dynatree_lib import ModelPair

    target = tiny_model("llama", seed=0, vocab=len(WORDS))
    pair = ModelPair(target, perturbed(target, 0.3, seed=1), tokenizer(), name="tiny-chat")
    # Two tasks with short questions: the tiny models hold 256 positions.
    args = ["--per-task", "1", "--tasks", "qa,translation", "--tokens", "8", "--warmup", "0", "--quiet", "--out", str(tmp_path),
            "--methods", "AR,Linear(k=3),FixedTree(depth=3, branch=2)"]
    script().main(args, load=lambda: pair)
    stored = pd.read_csv(tmp_path / "spec_bench.csv")
    assert len(stored) == 6 and stored["match_ar"].all() and set(stored["prompt_id"]) == {
        "spec_bench/qa/321", "spec_bench/translation/161"}
    assert {"load_1m", "git_commit", "cpu"} <= set(stored.columns)
    out = capsys.readouterr().out
    assert "qa" in out and "overall" in out and "exact" in out
    script().main(args, load=lambda: pair)  # resumes: every unit is stored, nothing is run or added
    assert len(pd.read_csv(tmp_path / "spec_bench.csv")) == 6
    capsys.readouterr()
    script().main([*args, "--report", "--dtype", "float32"], load=lambda: pytest.fail("--report loaded a model"))
    assert "float32, 2 question(s), 8 new tokens" in capsys.readouterr().out  # the stored rows of these settings
