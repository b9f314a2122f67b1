"""Spec-Bench's table, from our rows: one row per method, one column per task plus overall.

Each cell holds what Spec-Bench reports: the speedup over plain decoding and the mean accepted tokens per target
forward. Our speedup of a task is the median over its questions of each question's speedup over AR (the ratio of two
walls measured in one process; a question's value is the median over its repeats); the accepted tokens are pooled
over all the task's target forwards (the tokens committed in all rounds / the rounds), as Spec-Bench pools its
decoding steps. `exact` is the share of a method's runs token-identical to AR's (Spec-Bench's equal.py asks the same
of whole answers).
"""
from __future__ import annotations

import pandas as pd

from ..bench.prompts import data_dir
from ..bench.spec_bench import TASKS, task_of_id
from ..methods import label
from . import page
from .tables import names

COLUMNS = (*TASKS, "overall")
# The column headers a reader sees: Spec-Bench's names for its tasks, short enough for eight columns on a page.
TASK_NAMES = {"mt_bench": "MT-bench", "translation": "Transl.", "summarization": "Summ.", "qa": "QA",
              "math_reasoning": "Math", "rag": "RAG", "overall": "Overall", "exact": "Identical to AR"}
# ... and in a sentence.
TASK_TITLES = {"mt_bench": "MT-bench", "translation": "translation", "summarization": "summarization",
               "qa": "question answering", "math_reasoning": "mathematical reasoning", "rag": "RAG"}
# A task whose median prompt is longer than this many tokens counts as long-context (Spec-Bench's summarization and
# RAG: 700+; its other tasks: under 100).
LONG_PROMPT = 256


def _with_task(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        raise ValueError("the DataFrame is empty")
    df = df.copy()
    df["task"] = df["prompt_id"].map(task_of_id)
    # Older rows name the ratio over AR `speedup` only; rows written with HFGenerate measured keep it separately.
    df["ratio"] = df["speedup_vs_ar"] if "speedup_vs_ar" in df.columns else df["speedup"]
    df["committed"] = df["tokens_per_round"] * df["rounds"]
    return df


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """Per method: questions, median per-question speedup, pooled tokens per round, exact share, over `df`."""
    per_question = df.groupby(["method", "prompt_id"], sort=False)["ratio"].median()
    grouped = df.groupby("method", sort=False)
    return pd.DataFrame({
        "questions": per_question.groupby(level="method", sort=False).size(),
        "speedup": per_question.groupby(level="method", sort=False).median(),
        "tokens_per_round": grouped["committed"].sum() / grouped["rounds"].sum(),
        "exact": grouped["match_ar"].mean(),
    })


def spec_bench_table(df: pd.DataFrame, length: int = 128) -> pd.DataFrame:
    """Long form: one row per (method, task) with task in TASKS plus "overall" (every question of every task):
    questions, speedup (over AR), tokens_per_round, exact. Methods in the order of their first row."""
    df = _with_task(df)
    part = df[df["max_new_tokens"] == length]
    if part.empty:
        raise ValueError(f"no rows at {length} new tokens; lengths stored: {sorted(set(df['max_new_tokens']))}")
    frames = [_cells(part[part["task"] == task]).assign(task=task) for task in TASKS if (part["task"] == task).any()]
    frames.append(_cells(part).assign(task="overall"))
    table = pd.concat(frames).rename_axis("method").reset_index()
    table["order"] = table["method"].map({m: i for i, m in enumerate(dict.fromkeys(part["method"]))})
    table["column"] = table["task"].map(COLUMNS.index)
    return table.sort_values(["order", "column"], ignore_index=True)[
        ["method", "task", "questions", "speedup", "tokens_per_round", "exact"]]


def spec_bench_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Spec-Bench's layout of `spec_bench_table`'s rows: a row per method, a column per task and overall, each cell
    "1.83x · 3.10" (speedup over AR · mean accepted tokens per target forward), and the exact share."""
    cell = table.assign(text=[f"{s:.2f}x · {t:.2f}" for s, t in zip(table["speedup"], table["tokens_per_round"])])
    methods = list(dict.fromkeys(table["method"]))
    wide = cell.pivot(index="method", columns="task", values="text").reindex(methods)
    wide = wide[[c for c in COLUMNS if c in wide.columns]]
    overall = table[table["task"] == "overall"].set_index("method")
    wide["exact"] = overall["exact"].reindex(methods).map(lambda v: f"{v:.0%}")
    wide.columns = [str(c) for c in wide.columns]
    return wide.reset_index()


def spec_bench_wide(table: pd.DataFrame, value: str = "speedup") -> pd.DataFrame:
    """One value of `spec_bench_table`'s rows ("speedup" or "tokens_per_round") as a row per method (the `method`
    column first) and a column per task plus overall, under the names readers know (TASK_NAMES): Spec-Bench's
    layout split in two, so that each table fits a page's width."""
    methods = list(dict.fromkeys(table["method"]))
    wide = table.pivot(index="method", columns="task", values=value).reindex(methods)
    wide = wide[[c for c in COLUMNS if c in wide.columns]].rename(columns=TASK_NAMES)
    wide.columns = [str(c) for c in wide.columns]
    return wide.reset_index()


def spec_bench_versus(df: pd.DataFrame, method: str, peer: str, length: int = 128) -> pd.Series:
    """Per task and overall: the median over questions of `method`'s speedup over `peer` (per question, the ratio of
    the two same-process speedups over AR), as the issue's target "1.15x over the peer on every task" asks."""
    df = _with_task(df)
    part = df[df["max_new_tokens"] == length]
    missing = [m for m in (method, peer) if m not in set(part["method"])]
    if missing:
        raise ValueError(f"no rows of {missing} at {length} new tokens; methods stored: {sorted(set(part['method']))}")
    per = part.groupby(["method", "task", "prompt_id"], sort=False)["ratio"].median()
    ratio = (per.xs(method, level="method") / per.xs(peer, level="method")).dropna()
    by_task = ratio.groupby(level="task").median()
    return pd.concat([by_task.reindex([t for t in TASKS if t in by_task.index]),
                      pd.Series({"overall": ratio.median()})]).rename(f"{method} over {peer}")


def spec_bench_reference() -> pd.DataFrame:
    """Spec-Bench's published RTX 3090 / Vicuna-7B table (reference from other hardware and models; see
    data/prompts/spec_bench/SOURCE.md)."""
    return pd.read_csv(data_dir() / "prompts" / "spec_bench" / "leaderboard_rtx3090.csv")


def speedup_table(table: pd.DataFrame) -> pd.DataFrame:
    """Spec-Bench's first number as a page shows it: `Method` (display name), a column per task and overall, and the
    share of each method's runs identical to AR."""
    wide = spec_bench_wide(table, "speedup")
    wide["Identical to AR"] = table[table["task"] == "overall"].set_index("method")["exact"].reindex(
        wide["method"]).to_numpy()
    return _named(wide)


def tokens_table(table: pd.DataFrame) -> pd.DataFrame:
    """Spec-Bench's second number: tokens committed per target forward, a row per method, a column per task."""
    return _named(spec_bench_wide(table, "tokens_per_round"))


def _named(wide: pd.DataFrame) -> pd.DataFrame:
    wide.insert(0, "Method", names(wide.pop("method")))
    return wide


def versus_table(df: pd.DataFrame, pairs, length: int = 128) -> pd.DataFrame:
    """`spec_bench_versus` for each (method, peer) pair whose rows are stored, a row each ("A over B"), tasks under
    the names readers know."""
    stored = set(df["method"])
    present = [(label(m), label(p)) for m, p in pairs if {label(m), label(p)} <= stored]
    if not present:
        raise ValueError(f"none of the pairs has rows of both methods; methods stored: {sorted(stored)}")
    over = pd.DataFrame([spec_bench_versus(df, m, p, length) for m, p in present]).reset_index(drop=True)
    shown = names([x for two in present for x in two])
    over.insert(0, "Method", [f"{shown[2 * i]} over {shown[2 * i + 1]}" for i in range(len(present))])
    return over.rename(columns=TASK_NAMES)


def spec_bench_numbers(df: pd.DataFrame, method: str, peer: str, length: int = 128) -> dict:
    """What the prose says of Spec-Bench (sb_* keys, for glue): questions per task, `method`'s overall speedup over
    AR and over `peer` (per task: lowest, highest, on how many tasks it leads), and the fastest method per task."""
    cells = spec_bench_table(df, length)
    tasks = spec_bench_versus(df, method, peer, length)
    overall, tasks = float(tasks["overall"]), tasks.drop("overall")
    ahead = int((tasks > 1).sum())
    best = cells[cells["task"] != "overall"].sort_values("speedup").groupby("task").tail(1).set_index("task")
    best = best.reindex([t for t in TASKS if t in best.index])
    return {
        "sb_length": length, "sb_per_task": int(cells["questions"][cells["task"] != "overall"].min()),
        "sb_lead": float(cells[cells["task"] == "overall"].set_index("method").loc[method, "speedup"]),
        "sb_vs_peer": overall,
        "sb_vs_peer_min": float(tasks.min()), "sb_vs_peer_min_task": TASK_TITLES[tasks.idxmin()],
        "sb_vs_peer_max": float(tasks.max()), "sb_vs_peer_max_task": TASK_TITLES[tasks.idxmax()],
        "sb_ahead": "on every task" if ahead == len(tasks) else f"on {ahead} of {len(tasks)} tasks",
        "sb_fastest": "; ".join(f"{TASK_TITLES[t]}, {n} ({v:.2f}x)"
                                for t, n, v in zip(best.index, names(best["method"]), best["speedup"])),
    }


def prefill_numbers(df: pd.DataFrame, method: str, length: int = 128) -> dict:
    """Why long prompts gain least (sb_long_* / sb_short_* keys, for glue): on the long-context tasks (median prompt
    over LONG_PROMPT tokens), the share of `method`'s wall time spent before its first token (the target's prefill,
    which plain decoding pays as well), and the speedup over AR once that time is taken out of both walls (per
    question, from the one row: the method's own time to first token stands for both prefills), beside the same
    after-prefill speedup on the other tasks. Medians over questions."""
    df = _with_task(df)
    rows = df[(df["method"] == method) & (df["max_new_tokens"] == length)]
    if rows.empty:
        raise ValueError(f"no rows of {method} at {length} new tokens; methods stored: {sorted(set(df['method']))}")
    prompt = rows.groupby("task")["prompt_tokens"].median()
    long = rows["task"].isin(prompt.index[prompt > LONG_PROMPT])
    if not long.any() or long.all():
        raise ValueError(f"need tasks with prompts both over and under {LONG_PROMPT} tokens; "
                         f"medians: {prompt.to_dict()}")
    after = (rows["ar_wall_s"] - rows["ttft_s"]) / (rows["wall_s"] - rows["ttft_s"])

    def median(values: pd.Series, part: pd.Series) -> float:  # over questions, each the median over its repeats
        return float(values[part].groupby(rows.loc[part, "prompt_id"]).median().median())

    cells = {"long": _cells(rows[long]).iloc[0], "short": _cells(rows[~long]).iloc[0]}  # speedup, pooled tokens
    return {
        "sb_long_tasks": " and ".join(TASK_TITLES[t] for t in TASKS if t in set(rows.loc[long, "task"])),
        "sb_long_tokens": float(rows.loc[long, "prompt_tokens"].median()),
        "sb_long_share": median(rows["ttft_s"] / rows["wall_s"], long),
        "sb_long_after": median(after, long), "sb_short_after": median(after, ~long),
        **{f"sb_{kind}_speedup": float(c["speedup"]) for kind, c in cells.items()},
        **{f"sb_{kind}_tokens_per_forward": float(c["tokens_per_round"]) for kind, c in cells.items()},
    }


def draft_prefill_numbers(df: pd.DataFrame, method: str) -> dict:
    """The draft's prefill as a share of `method`'s wall time, lowest and highest over its runs (sb_draft_prefill_*
    keys, for glue), from rows that time it apart (`draft_prefill_s`: the draft's first forward, over the prompt)."""
    rows = df[df["method"] == method]
    if rows.empty or "draft_prefill_s" not in rows or rows["draft_prefill_s"].isna().all():
        raise ValueError(f"no draft_prefill_s of {method} in these rows; methods: {sorted(set(df['method']))}")
    share = rows["draft_prefill_s"] / rows["wall_s"]
    return {"sb_draft_prefill_min": float(share.min()), "sb_draft_prefill_max": float(share.max()),
            "sb_draft_prefill_questions": int(rows["prompt_id"].nunique())}


def reference_table() -> pd.DataFrame:
    """`spec_bench_reference` as a page shows it: method, the tasks under their names, overall, tokens per forward."""
    names = {**TASK_NAMES, "method": "Method", "mean_accepted_tokens": "Tokens per forward"}
    return spec_bench_reference()[["method", *TASKS, "overall", "mean_accepted_tokens"]].rename(columns=names)


# The columns of this module's tables on a page (reference_table, draft_context_table): a task's column is a speedup
FORMATS = {**{TASK_NAMES[t]: page.times for t in COLUMNS}, "Speedup": page.times, "Over whole prompt": page.times,
           "Tokens per forward": "{:.2f}".format, "Draft prefill (s)": "{:.1f}".format, "Identical to AR": page.share}


def _contexts(df: pd.DataFrame, method) -> pd.DataFrame:
    """`draft_context_table` with each row's window (0: the whole prompt) and the tasks in `df`."""
    from dataclasses import replace

    from ..bench.specs import parse_method, row_methods

    method = parse_method(method) if isinstance(method, str) else method
    # per row: the prompt tokens the draft read (0: all of them), or -1 for a row of another method
    windows = [(m.draft_context or 0) if isinstance(m, type(method)) and replace(m, draft_context=None) == method
               else -1 for m in row_methods(df)]
    rows = _with_task(df).assign(window=windows)
    rows = rows[rows["window"] >= 0]
    whole = rows[rows["window"] == 0].groupby("prompt_id")["wall_s"].median()
    if whole.empty:
        raise ValueError(f"no rows of {label(method)} in these rows; methods: {sorted(set(df['method']))}")
    out = []
    for window, part in rows.groupby("window"):
        per = part.groupby("prompt_id")[["wall_s", "ratio", "tokens_per_round", "draft_prefill_s"]].median()
        over = whole / per["wall_s"]
        task = part.groupby("prompt_id")["task"].first()
        tasks = {TASK_NAMES[t]: float(over[task == t].median()) for t in TASKS if t in set(task)}
        out.append({"Draft reads": f"last {window} tokens" if window else "whole prompt", "window": window,
                    "Questions": len(per), "Speedup": float(per["ratio"].median()),
                    "Over whole prompt": float(over.median()), **tasks,
                    "Tokens per forward": float(per["tokens_per_round"].median()),
                    "Draft prefill (s)": float(per["draft_prefill_s"].median()),
                    "Identical to AR": float(part["match_ar"].mean())})
    # the whole prompt first, then the windows from the widest
    return pd.DataFrame(out).sort_values("window", key=lambda w: -w.where(w > 0, 10**9), ignore_index=True)


def draft_context_table(df: pd.DataFrame, method) -> pd.DataFrame:
    """What reading less of a long prompt does to `method`'s draft (a method or its label): one row per prompt window
    W among `method`'s `draft_context` variants in `df` (rows of one process), the whole prompt first, with medians
    over questions of the speedup over plain decoding, of the speed against the whole-prompt run (per question, the
    ratio of the two walls; overall, then per task), of tokens per target forward and of the draft's prefill in
    seconds, and the share of runs identical to plain decoding."""
    return _contexts(df, method).drop(columns=["window", "Questions"])


def draft_context_numbers(df: pd.DataFrame, method) -> dict:
    """The numbers of `draft_context_table` a page states (dc_* keys, for glue), for the whole prompt and for the
    window that ran fastest against it: the CPU, questions, tasks, draft prefill seconds, tokens per target forward,
    the speed against the whole prompt overall and per task (dc_over_<task>)."""
    table = _contexts(df, method)
    whole, best = table.iloc[0], table.iloc[1:].sort_values("Over whole prompt").iloc[-1]
    tasks = [TASK_TITLES[t] for t in TASKS if TASK_NAMES[t] in table.columns]
    return {"dc_cpu": " / ".join(dict.fromkeys(df["cpu"])), "dc_questions": int(whole["Questions"]),
            "dc_tasks": " and ".join(tasks), "dc_window": int(best["window"]),
            "dc_prefill_whole": float(whole["Draft prefill (s)"]), "dc_prefill_window": float(best["Draft prefill (s)"]),
            "dc_tokens_whole": float(whole["Tokens per forward"]), "dc_tokens_window": float(best["Tokens per forward"]),
            "dc_over": float(best["Over whole prompt"]),
            **{f"dc_over_{t}": float(best[TASK_NAMES[t]]) for t in TASKS if TASK_NAMES[t] in table.columns}}
