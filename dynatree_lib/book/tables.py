"""Tidy summary tables of stored results for the book: one function per question a chapter asks.

Aggregation is bench.summary's (per_prompt, per_config): a prompt's value is the median over its repeats, a
configuration's value the median over prompts. Ratios between two methods (phase 3 over the fixed tree, streaming
over no streaming, over transformers' assisted generation) are taken per prompt first, because each speedup is a
ratio of walls measured in one process while two methods may come from different (resumed) sessions.

Methods: `method` is a method's full configuration in constructor syntax (`label()`, the spelling of stored rows
and of lookups); the tables a chapter shows put `name` first, the method's display name ("DynaTree · int4 draft",
methods.names.display_names, unique within the table), so the configuration is a column or a hover away.
"""
from __future__ import annotations

import pandas as pd

from . import page, research
from ..bench.specs import stored_method
from ..bench.storage import distinct, read_results, results_path
from ..bench.summary import per_config, per_prompt, prepared
from ..methods.base import Autoregressive, FixedTree, label
from ..methods.names import display_names
from ..methods.streaming import Streaming

def stored_rows(experiment: str, dtype: str, device: str, command: str) -> pd.DataFrame:
    """The rows of data/results/<experiment>.csv measured in `dtype` on `device`; when there are none, an error that
    says which `command` measures them."""
    rows = read_results(results_path(experiment))
    rows = rows[(rows["dtype"] == dtype) & (rows["device"] == device)]
    if rows.empty:
        raise ValueError(f"no {dtype} rows on {device} in data/results/{experiment}.csv: measure them with {command}")
    return rows


def method_of(text: str):
    """The method a `method` cell names (stored rows' spelling, or an old label); None for a name no method class
    reads (a stand-in in a hand-made table)."""
    try:
        return stored_method(None, None, str(text))
    except ValueError:
        return None


def names(methods) -> list[str]:
    """Display names for a column of `method` cells, unique within the column (rows -> method -> name); a cell no
    method class reads is shown as it is."""
    texts = list(methods)
    parsed = [method_of(t) for t in texts]
    known = list(dict.fromkeys(m for m in parsed if m is not None))
    shown = dict(zip(known, display_names(known)))
    return [shown[m] if m is not None else str(t) for m, t in zip(parsed, texts)]


def named(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with `name`, the display name of its `method`, as the first column."""
    table = table.copy()
    table.insert(0, "name", names(table["method"]))
    return table


def ratio_per_prompt(df: pd.DataFrame, method: str, reference: str, value: str = "speedup") -> pd.Series:
    """`value` of `method` over that of `reference`, per (max_new_tokens, variant, prompt) where both exist."""
    pp = per_prompt(df).set_index(["method", "max_new_tokens", "variant", "prompt_id"])[value].sort_index()
    if method not in pp.index.get_level_values(0) or reference not in pp.index.get_level_values(0):
        return pd.Series(dtype=float)
    return (pp.xs(method, level="method") / pp.xs(reference, level="method")).dropna()


KINDS = {"HumanEval/": "code", "prose/": "prose", "technical/": "technical"}


def text_kind(prompt_id: str) -> str:
    """The kind of text a stored prompt id names (code, prose, technical; 'other' for ids of other sets)."""
    return next((kind for prefix, kind in KINDS.items() if str(prompt_id).startswith(prefix)), "other")


def prompts_described(df: pd.DataFrame) -> str:
    """'9 prompts (3 code, 3 prose, 3 technical)': what a results table was measured on."""
    ids = pd.Series(df["prompt_id"].unique())
    counts = ids.map(text_kind).value_counts()
    parts = ", ".join(f"{counts[k]} {k}" for k in [*KINDS.values(), "other"] if k in counts)
    return f"{len(ids)} prompt{'' if len(ids) == 1 else 's'} ({parts})"


def round_costs(df: pd.DataFrame) -> pd.DataFrame:
    """Per method, medians over runs: seconds per round spent drafting, verifying and committing (the draft's
    one-off prompt prefill falls in the first round), nodes drafted per round, seconds per draft forward (forward
    hooks; the prefill forward included), and these over `ar_step_s`, AR's median seconds per target step.

    `round_over_ar_step` is what a round costs in AR steps: a method gains over AR roughly when its
    `tokens_per_round` exceeds it (prefill and bookkeeping outside the rounds aside)."""
    df = prepared(df)
    rounds = df["rounds"].where(df["rounds"] > 0)
    df["draft_s_per_round"] = df["draft_s"] / rounds
    df["verify_s_per_round"] = df["verify_s"] / rounds
    df["commit_s_per_round"] = df["commit_s"] / rounds if "commit_s" in df.columns else 0.0
    round_s = df["draft_s_per_round"] + df["verify_s_per_round"] + df["commit_s_per_round"]
    df["round_s"] = round_s.where(round_s > 0)  # transformers' loops keep no per-round timings
    df["draft_s_per_forward"] = df["draft_forward_s"] / df["draft_forwards"].where(df["draft_forwards"] > 0)
    columns = ["tokens_per_round", "nodes_per_round", "draft_s_per_round", "verify_s_per_round", "commit_s_per_round",
               "round_s", "draft_s_per_forward"]
    out = df.groupby("method", sort=False)[columns].median()
    ar_step = out["verify_s_per_round"].get("AR", float("nan"))
    out["ar_step_s"] = ar_step
    out["round_over_ar_step"] = out["round_s"] / ar_step
    out["verify_over_ar_step"] = out["verify_s_per_round"] / ar_step
    out["draft_forward_over_ar_step"] = out["draft_s_per_forward"] / ar_step
    return out.reset_index()


def _stage(text: str) -> str:
    """An ablation stage from the method itself: AR, the fixed tree, or the adaptive tree's phase and the parts
    switched off."""
    method = method_of(text)
    if isinstance(method, Autoregressive):
        return "AR"
    if isinstance(method, FixedTree):
        return "fixed tree"
    if hasattr(method, "phase"):
        off = [what for on, what in ((method.pruning, "no pruning"), (method.node_budget, "no node budget")) if not on]
        return ", ".join([f"phase {method.phase}", *off])
    return text


STAGES = ["fixed tree", "phase 1", "phase 2", "phase 3", "phase 3, no pruning", "phase 3, no node budget"]


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed tree vs DynaTree's cumulative phases per base depth (FixedTree depth = DynaTree base_depth, same
    branch), with `gain_over_fixed`: the per-prompt median of the stage's speedup over the fixed tree's, minus 1."""
    table = per_config(df)
    table = table[table["method"] != "AR"].copy()
    table["stage"] = table["method"].map(_stage)
    depth = table["depth"] if "depth" in table.columns else pd.Series(float("nan"), index=table.index)
    base = table["base_depth"] if "base_depth" in table.columns else pd.Series(float("nan"), index=table.index)
    table["base_depth"] = base.fillna(depth).astype("Int64")
    fixed = table[table["stage"] == "fixed tree"].set_index(["base_depth", "max_new_tokens"])["method"]
    gains = []
    for _, row in table.iterrows():
        ref = fixed.get((row["base_depth"], row["max_new_tokens"]))
        ratio = ratio_per_prompt(df[df["max_new_tokens"] == row["max_new_tokens"]], row["method"], ref) \
            if ref is not None else pd.Series(dtype=float)
        gains.append(ratio.median() - 1 if len(ratio) else float("nan"))
    table["gain_over_fixed"] = gains
    table["stage"] = pd.Categorical(table["stage"], [*STAGES, *sorted(set(table["stage"]) - set(STAGES))])
    columns = ["base_depth", "stage", "max_new_tokens", "prompts", "speedup", "speedup_min", "gain_over_fixed",
               "tokens_per_s", "tokens_per_round", "acceptance_depth", "nodes_per_round", "method"]
    return named(table[columns].sort_values(["max_new_tokens", "base_depth", "stage"]).reset_index(drop=True))


def sensitivity_table(df: pd.DataFrame, default: str | None = None) -> pd.DataFrame:
    """AdaptiveTree configurations by confidence thresholds and branch range, with `vs_default`: the per-prompt
    median of each one's speedup over the `default` method's (the research's best, AdaptiveTree(), unless given)."""
    from ..methods.adaptive import AdaptiveTree

    default = default or label(AdaptiveTree())
    table = per_config(df)
    table = table[table["method"].str.startswith("AdaptiveTree")].copy()
    table["confidence"] = [f"{h:g}/{lo:g}" for h, lo in zip(table["high_conf"], table["low_conf"])]
    table["branches"] = [f"[{int(a)}, {int(c)}], default {int(b)}" for a, b, c in
                         zip(table["min_branch"], table["default_branch"], table["max_branch"])]
    table["vs_default"] = [
        ratio_per_prompt(df[df["max_new_tokens"] == n], m, default).median() for m, n in
        zip(table["method"], table["max_new_tokens"])]
    columns = ["confidence", "branches", "max_new_tokens", "prompts", "speedup", "speedup_min", "vs_default",
               "tokens_per_round", "acceptance_depth", "nodes_per_round", "method"]
    table = table[columns].sort_values(["max_new_tokens", "speedup"], ascending=[True, False])
    return named(table.reset_index(drop=True))


def streaming_table(df: pd.DataFrame) -> pd.DataFrame:
    """Each Streaming(method, cache) beside `method` without streaming: compressions, speedup over AR, and
    `vs_unstreamed`, the per-prompt median of its speedup over the unstreamed method's (AR's is 1). `method` is the
    unstreamed method, `label` the streaming one."""
    table = per_config(df)
    rows = []
    for _, row in table.iterrows():
        streaming = method_of(row["method"])
        if not isinstance(streaming, Streaming):
            continue
        inner, n = label(streaming.method), row["max_new_tokens"]
        part = df[df["max_new_tokens"] == n]
        ratio = ratio_per_prompt(part, row["method"], inner)
        rows.append({"method": inner, "cache_size": streaming.cache_size, "sink_tokens": streaming.sink_tokens,
                     "max_new_tokens": n, "prompts": row["prompts"], "kv_compressions": row["kv_compressions"],
                     "speedup": row["speedup"], "vs_unstreamed": ratio.median() if len(ratio) else float("nan"),
                     "tokens_per_s": row["tokens_per_s"], "tokens_per_round": row["tokens_per_round"],
                     "match_ar": row["match_ar"], "label": row["method"]})
    if not rows:
        raise ValueError("no Streaming(...) rows in the DataFrame")
    return named(pd.DataFrame(rows).sort_values(["max_new_tokens", "method", "cache_size"]).reset_index(drop=True))


def int8_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method and length: throughput with the target as given and with int8 weights, `int8_speed` (per-prompt
    median of int8 tok/s over base tok/s), the target's weight bytes in each variant and `memory_saving`."""
    table = per_config(df)
    if set(table["variant"]) < {"base", "int8"}:
        raise ValueError("int8_table needs rows of both variants, 'base' and 'int8'")
    sizes = df.groupby("variant")["target_bytes"].median() if "target_bytes" in df.columns else pd.Series(dtype=float)
    pp = per_prompt(df).set_index(["variant", "method", "max_new_tokens", "prompt_id"])["tokens_per_s"].sort_index()
    rows = []
    for (method, n), part in table.groupby(["method", "max_new_tokens"], sort=False):
        by = part.set_index("variant")
        if not {"base", "int8"} <= set(by.index):
            continue
        ratio = (pp.xs(("int8", method, n)) / pp.xs(("base", method, n))).dropna()
        rows.append({"method": method, "max_new_tokens": n, "prompts": int(by["prompts"].min()),
                     "base_tokens_per_s": by.at["base", "tokens_per_s"],
                     "int8_tokens_per_s": by.at["int8", "tokens_per_s"],
                     "int8_speed": ratio.median(), "base_speedup": by.at["base", "speedup"],
                     "int8_speedup": by.at["int8", "speedup"],
                     "base_peak_mem_bytes": by.at["base", "peak_mem_bytes"],
                     "int8_peak_mem_bytes": by.at["int8", "peak_mem_bytes"]})
    out = pd.DataFrame(rows)
    out["base_target_bytes"] = sizes.get("base", float("nan"))
    out["int8_target_bytes"] = sizes.get("int8", float("nan"))
    out["memory_saving"] = 1 - out["int8_target_bytes"] / out["base_target_bytes"]
    return named(out)


def beside_research(reference: pd.DataFrame, ours: pd.DataFrame, mapping: dict, columns,
                    ours_columns=("speedup", "tokens_per_s", "tokens_per_round", "acceptance_depth")) -> pd.DataFrame:
    """A research table (its `columns`, prefixed research_) with our values beside (prefixed ours_): `ours` is a
    `per_config` table, `mapping` maps the research's method names to our labels (unmapped or not measured: NaN)."""
    side = reference.set_index("method")[list(columns)].add_prefix("research_")
    mine = ours.drop_duplicates("method").set_index("method")
    for column in ours_columns:
        values = mine[column] if column in mine.columns else pd.Series(dtype=float)
        side[f"ours_{column}"] = [values.get(mapping.get(m), float("nan")) for m in side.index]
    return side


def against_best_policy(df: pd.DataFrame, method: str, candidates=None) -> pd.DataFrame:
    """Per prompt: `method`'s speedup beside the best of `candidates` on that prompt (default: every other method
    that drafts its own tree or chain, neither AR nor transformers' loops) and their ratio, the question a planner
    must answer (is it ever worse than the best fixed policy it could have picked?)."""
    pp = per_prompt(df)
    if method not in set(pp["method"]):
        raise ValueError(f"no rows of {method!r}")
    if candidates is None:
        candidates = [m for m in pp["method"].unique() if m != method and m != "AR" and not m.startswith("HF")]
    pool = pp[pp["method"].isin(candidates)]
    if pool.empty:
        raise ValueError(f"no rows of the candidate policies {list(candidates)}")
    keys = ["max_new_tokens", "prompt_id"]
    best = pool.loc[pool.groupby(keys)["speedup"].idxmax(), [*keys, "method", "speedup"]]
    mine = pp[pp["method"] == method][[*keys, "speedup"]]
    out = mine.merge(best.rename(columns={"method": "best_policy", "speedup": "best_speedup"}), on=keys)
    out.insert(2, "kind", out["prompt_id"].map(text_kind))
    out["ratio"] = out["speedup"] / out["best_speedup"]
    return out.rename(columns={"speedup": f"{method} speedup"}).reset_index(drop=True)


COSTS_FORMATS = {"Tokens per forward": "{:.1f}".format, "Round (plain steps)": "{:.2f}".format,
                 "Draft forward (plain steps)": "{:.3f}".format, "TTFT (s)": "{:.2f}".format,
                 "TPOT (ms)": "{:.0f}".format, "Peak memory": page.mib}  # costs_table's columns on a page


def costs_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method, medians over prompts, most tokens per forward first: tokens committed per target forward, a
    round's cost and a draft forward's in steps of plain decoding (`round_costs`), time to first token, time per
    output token and the process's peak memory."""
    costs = round_costs(df).set_index("method")
    per = per_config(df).set_index("method")
    table = pd.DataFrame({
        "Tokens per forward": per["tokens_per_round"], "Round (plain steps)": costs["round_over_ar_step"],
        "Draft forward (plain steps)": costs["draft_forward_over_ar_step"], "TTFT (s)": per["ttft_s"],
        "TPOT (ms)": per["tpot_s"] * 1e3, "Peak memory": per["peak_mem_bytes"],
    }).reset_index().sort_values("Tokens per forward", ascending=False)
    table.insert(0, "Method", names(table.pop("method")))
    return table
