"""Summaries of stored rows: medians over prompts of per-prompt medians, ratios between methods."""
from __future__ import annotations

import json

import pandas as pd



def summarize(df: pd.DataFrame, baseline: str | None = "HFAssisted") -> pd.DataFrame:
    """One row per (method, max_new_tokens): medians over prompts of each prompt's median over repeats.

    `speedup_min` is the worst prompt; `speedup_vs_<baseline>` compares per prompt the two speedups over AR
    (each a same-process ratio), so it stays valid when the two methods ran in different resumed sessions.
    """
    per_prompt = (df.groupby(["method", "max_new_tokens", "prompt_id"], sort=False)
                  .agg(tokens_per_s=("tokens_per_s", "median"), speedup=("speedup", "median"),
                       bookkeeping_share=("bookkeeping_share", "median"), commit_share=("commit_share", "median"),
                       tokens_per_round=("tokens_per_round", "median"),
                       acceptance_depth=("acceptance_depth", "median"), match_ar=("match_ar", "all"))
                  .reset_index())
    columns = {}
    if baseline is not None and baseline in set(per_prompt["method"]):
        base = per_prompt[per_prompt["method"] == baseline].set_index(["max_new_tokens", "prompt_id"])["speedup"]
        idx = pd.MultiIndex.from_frame(per_prompt[["max_new_tokens", "prompt_id"]])
        per_prompt[f"speedup_vs_{baseline}"] = per_prompt["speedup"].to_numpy() / base.reindex(idx).to_numpy()
        columns[f"speedup_vs_{baseline}"] = (f"speedup_vs_{baseline}", "median")
    out = (per_prompt.groupby(["method", "max_new_tokens"], sort=False)
           .agg(prompts=("prompt_id", "nunique"), tokens_per_s=("tokens_per_s", "median"),
                speedup=("speedup", "median"), speedup_min=("speedup", "min"), **columns,
                tokens_per_round=("tokens_per_round", "median"), acceptance_depth=("acceptance_depth", "median"),
                bookkeeping_share=("bookkeeping_share", "median"), commit_share=("commit_share", "median"),
                match_ar=("match_ar", "mean"))
           .reset_index())
    return out


def with_params(df: pd.DataFrame) -> pd.DataFrame:
    """`df` plus one column per method parameter (depth, branch, k, ...) parsed from `method_params`, for sweeps
    and heatmaps; methods without that parameter get NaN."""
    params = pd.DataFrame([json.loads(p) if isinstance(p, str) and p else {} for p in df["method_params"]],
                          index=df.index)
    return pd.concat([df, params[[c for c in params.columns if c not in df.columns]]], axis=1)
