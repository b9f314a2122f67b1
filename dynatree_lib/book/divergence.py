"""Where the speed table's bf16 runs leave bf16 plain decoding, and whether their text is worse after the flip.

Every row of a speed table records whether its tokens equal plain decoding's on the same prompt (`match_ar`), the
first position where they differ (`first_divergence`) and the perplexity of its generated tokens under the target
(`perplexity`). In bf16 a batched verification can pick the other token at a near-tie of the target's top two
logits; from there on the text is a different one, still the target's greedy continuation of its own context.
"""
from __future__ import annotations

import pandas as pd


def _identical(values: pd.Series) -> pd.Series:
    # Stored as booleans or as the strings "True"/"False", depending on how the CSV was read back.
    return values.map(lambda v: v is True or str(v) == "True")


def divergence_table(df: pd.DataFrame, length: int) -> pd.DataFrame:
    """Per method at `length` new tokens: runs, the share identical to plain decoding, the median first position of
    divergence and, over the runs that diverged, the median ratio of their perplexity to plain decoding's on the same
    prompt and the share of them whose perplexity is higher (worse)."""
    part = df[df["max_new_tokens"] == length].assign(identical=lambda d: _identical(d["match_ar"]))
    plain = part[part["method"] == "AR"].groupby("prompt_id")["perplexity"].median()
    if plain.empty:
        raise ValueError(f"no plain-decoding (AR) rows at {length} new tokens to compare with")
    rows = []
    for method, runs in part[part["method"] != "AR"].groupby("method", sort=False):
        diverged = runs[~runs["identical"]]
        ratio = diverged["perplexity"].to_numpy() / plain.reindex(diverged["prompt_id"]).to_numpy()
        rows.append({"method": method, "runs": len(runs), "identical": runs["identical"].mean(),
                     "first_divergence": diverged["first_divergence"].median(),
                     "perplexity_ratio": pd.Series(ratio).median(), "worse": (pd.Series(ratio) > 1).mean()})
    return pd.DataFrame(rows)


def shared_flips(df: pd.DataFrame, length: int) -> tuple[int, int]:
    """(prompts where every method that diverged parted from plain decoding at the same position, prompts where any
    diverged): a flip that every method meets is the target's near-tie, not one method's doing."""
    part = df[(df["max_new_tokens"] == length) & (df["method"] != "AR")]
    diverged = part[~_identical(part["match_ar"])]
    positions = diverged.groupby("prompt_id")["first_divergence"].nunique()
    return int((positions == 1).sum()), int(len(positions))
