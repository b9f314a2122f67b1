"""Summaries of stored rows, the one aggregation every table uses: a prompt's value is the median over its repeats
(per_prompt), a configuration's value the median over prompts (per_config); ratios between two methods are taken
per prompt first, because each speedup is a ratio of walls measured in one process while two methods may come from
different (resumed) sessions."""
from __future__ import annotations

import json

import pandas as pd

STATS = ("tokens_per_s", "speedup", "tokens_per_round", "acceptance_depth", "acceptance_nodes", "ttft_s", "tpot_s",
         "nodes_per_round", "kv_compressions", "peak_mem_bytes", "peak_mem_delta_bytes", "perplexity",
         "bookkeeping_share", "commit_share")
CONFIG = ("method", "max_new_tokens")


def prepared(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of stored rows with `variant` (default "base") and `nodes_per_round` where the rows count nodes."""
    if df.empty:
        raise ValueError("the DataFrame is empty")
    df = df.copy()
    if "variant" not in df.columns:
        df["variant"] = "base"
    if {"drafted_nodes", "rounds"} <= set(df.columns):
        df["nodes_per_round"] = df["drafted_nodes"] / df["rounds"].where(df["rounds"] > 0)
    return df


def per_prompt(df: pd.DataFrame, by=CONFIG) -> pd.DataFrame:
    """One row per configuration (`by`, variant) and prompt: the median over repeats of every statistic."""
    df = prepared(df)
    keys = [*dict.fromkeys([*by, "variant"]), "prompt_id"]
    stats = [c for c in STATS if c in df.columns]
    out = df.groupby(keys, sort=False)[stats].median()
    out["match_ar"] = df.groupby(keys, sort=False)["match_ar"].all()
    out["method_params"] = df.groupby(keys, sort=False)["method_params"].first()
    return out.reset_index()


def per_config(df: pd.DataFrame, by=CONFIG) -> pd.DataFrame:
    """One row per configuration: medians over prompts (`prompts`, and the worst prompt's `speedup_min`), method
    parameters as columns (depth, branch, threshold, phase, ...)."""
    pp = per_prompt(df, by)
    keys = list(dict.fromkeys([*by, "variant"]))
    stats = [c for c in STATS if c in pp.columns]
    grouped = pp.groupby(keys, sort=False)
    out = grouped[stats].median()
    out.insert(0, "prompts", grouped["prompt_id"].nunique())
    out.insert(out.columns.get_loc("speedup") + 1, "speedup_min", grouped["speedup"].min())
    out["match_ar"] = grouped["match_ar"].mean()
    out["method_params"] = grouped["method_params"].first()
    return with_params(out.reset_index())


def summarize(df: pd.DataFrame, baseline: str | None = "HFAssisted") -> pd.DataFrame:
    """per_config's medians (what the benchmark scripts print), with `speedup_vs_<baseline>`: per prompt, the
    method's speedup over the baseline's (both same-process ratios over AR), median over prompts."""
    table = per_config(df)
    columns = ["method", "max_new_tokens", "prompts", "tokens_per_s", "speedup", "speedup_min", "tokens_per_round",
               "acceptance_depth", "bookkeeping_share", "commit_share", "match_ar"]
    if table["variant"].nunique() > 1:  # e.g. the target as given and its int8 copy: say which row is which
        columns.insert(2, "variant")
    if baseline is not None and baseline in set(df["method"]):
        keys = ["max_new_tokens", "variant", "prompt_id"]
        pp = per_prompt(df)
        base = pp[pp["method"] == baseline].set_index(keys)["speedup"]
        pp["ratio"] = pp["speedup"].to_numpy() / base.reindex(pd.MultiIndex.from_frame(pp[keys])).to_numpy()
        ratio = pp.groupby(["method", "max_new_tokens", "variant"], sort=False)["ratio"].median()
        table[f"speedup_vs_{baseline}"] = ratio.reindex(
            pd.MultiIndex.from_frame(table[["method", "max_new_tokens", "variant"]])).to_numpy()
        columns.insert(columns.index("speedup_min") + 1, f"speedup_vs_{baseline}")
    return table[[c for c in columns if c in table.columns]]


def with_params(df: pd.DataFrame) -> pd.DataFrame:
    """`df` plus one column per method parameter (depth, branch, k, ...) parsed from `method_params`, for sweeps
    and heatmaps; methods without that parameter get NaN."""
    params = pd.DataFrame([json.loads(p) if isinstance(p, str) and p else {} for p in df["method_params"]],
                          index=df.index)
    return pd.concat([df, params[[c for c in params.columns if c not in df.columns]]], axis=1)
