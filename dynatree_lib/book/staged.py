"""Staged drafting beside the default it modifies: what drafting the draft's own next levels buys.

DynaTree(staged=True) lets the draft check cheap prompt-lookup proposals inside its forwards (Spector and Re, 2023;
dynatree_lib.core.draft), so the tree can grow several levels per draft forward where the proposals agree. It saves
draft forwards; whether it saves time depends on what each of those forwards then costs (more rows per forward).
Staging is DynaTree's default with an unquantized draft and off with a quantized one; both drafts are compared
here with staging spelled out either way. Every number is a median over prompts of same-process values, as in
`verdict.summary`.
"""
from __future__ import annotations

import pandas as pd

from ..methods import Autoregressive, DynaTree, HFAssisted, label
from .tables import per_prompt
from .verdict import summary

# The drafts the comparison covers: DynaTree with each, unstaged and staged.
DRAFTS = {"int4": 4, "bf16": None}
# What the staged table shows of a table holding more methods (the speed table): DynaTree with each draft, unstaged
# and staged, plain decoding and transformers' assisted generation with each draft.
COMPARED = [label(m) for bits in DRAFTS.values() for m in (DynaTree(draft_bits=bits, staged=False),
                                                          DynaTree(draft_bits=bits, staged=True),
                                                          HFAssisted(draft_bits=bits))] + [label(Autoregressive())]


def forwards_per_token(df: pd.DataFrame, length: int) -> pd.Series:
    """Per method label: draft forwards per committed token (median over prompts; missing for plain decoding)."""
    part = df[df["max_new_tokens"] == length]
    ratio = (part["draft_forwards"] / part["new_tokens"]).where(part["draft_forwards"] > 0)
    return ratio.groupby(part["method"], sort=False).median()


def staged_table(df: pd.DataFrame, length: int) -> pd.DataFrame:
    """`verdict.summary` of the COMPARED methods stored at `length`, draft forwards per committed token beside it."""
    table = summary(df[df["method"].isin(COMPARED)], length, methods="all")
    table.insert(5, "Draft forwards per token", table["Configuration"].map(forwards_per_token(df, length)))
    return table


def staged_numbers(df: pd.DataFrame, length: int) -> dict:
    """For each draft (DRAFTS) whose runs are stored unstaged and staged: draft forwards per token of both
    (st_<draft>_forwards, st_<draft>_staged_forwards) and the staged run's speedup over the unstaged one (median of
    per-prompt ratios of their same-process speedups over plain decoding; st_<draft>_speed, and the lowest prompt's
    st_<draft>_speed_min), both speedups over plain decoding (st_<draft>_speedup, st_<draft>_staged_speedup) and
    the seconds each spent drafting per generation (st_<draft>_draft_s, st_<draft>_staged_draft_s)."""
    forwards = forwards_per_token(df, length)
    part = df[df["max_new_tokens"] == length]
    draft_s = part.groupby("method")["draft_s"].median()
    pp = per_prompt(part).pivot_table(index="prompt_id", columns="method", values="speedup")
    out = {}
    for draft, bits in DRAFTS.items():
        plain, staged = (label(DynaTree(draft_bits=bits, staged=on)) for on in (False, True))
        if plain not in pp or staged not in pp:
            continue
        ratio = (pp[staged] / pp[plain]).dropna()
        out |= {f"st_{draft}_forwards": float(forwards[plain]), f"st_{draft}_staged_forwards": float(forwards[staged]),
                f"st_{draft}_speed": float(ratio.median()), f"st_{draft}_speed_min": float(ratio.min()),
                f"st_{draft}_speedup": float(pp[plain].median()),
                f"st_{draft}_staged_speedup": float(pp[staged].median()),
                f"st_{draft}_draft_s": float(draft_s[plain]), f"st_{draft}_staged_draft_s": float(draft_s[staged])}
    if not out:
        raise ValueError(f"no DynaTree run stored both unstaged and staged at {length} new tokens")
    return out
