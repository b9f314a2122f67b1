"""The ablation chapter's questions, asked of `tables.ablation_table` and `tables.sensitivity_table`: which stages a
figure compares, the figures, phase 3's gain and the sensitivity settings beside the research's, and the numbers
the chapter's prose glues in (page.glue_numbers).

    chain = stages(tables.ablation_table(df), PHASES)     fixed tree, phase 1, phase 2, phase 3 at every base depth
    phases_figure(chain)                                  speedup over plain decoding, one bar per stage and depth
    gain_numbers(phase3_gain(chain))                      how phase 3 did against the fixed tree, for the prose
"""
from __future__ import annotations

import math

import pandas as pd
import plotly.express as px

from . import research, tables
from ..methods.adaptive import AdaptiveTree
from ..methods.base import FixedTree, label
from .plots import TEMPLATE

PHASES = ["fixed tree", "phase 1", "phase 2", "phase 3"]
SWITCHES = ["fixed tree", "phase 3", "phase 3, no pruning", "phase 3, no node budget"]
# The stages of the research's adaptive-tree table (research.ADAPTIVE_1000) and our methods for them.
RESEARCH_STAGES = {"Fixed tree D=5 B=2": label(FixedTree(depth=5, branch=2)),
                   "Phase 1": label(AdaptiveTree(phase=1)),
                   "Phase 2": label(AdaptiveTree(phase=2)),
                   "Phase 3": label(AdaptiveTree(phase=3))}


def stages(table: pd.DataFrame, names, base_depth: int | None = None) -> pd.DataFrame:
    """The rows of an `ablation_table` at the stages `names` (and at `base_depth`, when given), stage as text."""
    unknown = [n for n in names if n not in tables.STAGES]
    if unknown:
        raise ValueError(f"no ablation stage {unknown}; the stages are {tables.STAGES}")
    keep = table["stage"].isin(names)
    if base_depth is not None:
        keep &= table["base_depth"] == base_depth
    out = table[keep].copy()
    out["stage"] = out["stage"].astype(str)
    return out


def _speedup_bars(frame: pd.DataFrame, title: str, **bars):
    """Speedup over plain decoding as bars (`bars`: px.bar's x, color, facets, hover), values written on them, and
    a dotted line at 1: plain decoding's own speed."""
    fig = px.bar(frame, y="speedup", text_auto=".2f", template=TEMPLATE, title=title, **bars)
    fig.add_hline(y=1.0, line_dash="dot", line_color="#6b6b6b")
    return fig


def phases_figure(chain: pd.DataFrame):
    """The fixed tree and each phase added (`stages(..., PHASES)`), one bar per base depth, one panel per length."""
    return _speedup_bars(chain.assign(**{"base depth": chain["base_depth"].astype(str)}),
                         "Speedup over AR: fixed tree, then each phase added", x="stage", color="base depth",
                         barmode="group", facet_col="max_new_tokens",
                         hover_data=["tokens_per_round", "acceptance_depth", "nodes_per_round", "gain_over_fixed"])


def switches_figure(switches: pd.DataFrame, base_depth: int):
    """Phase 3 with and without pruning and the node budget (`stages(..., SWITCHES, base_depth)`)."""
    fig = _speedup_bars(switches, f"Phase 3 without pruning / without node budget (base depth {base_depth})",
                        x="stage", color="stage", facet_col="max_new_tokens",
                        hover_data=["tokens_per_round", "nodes_per_round"])
    fig.update_layout(showlegend=False)
    return fig


def sensitivity_figure(sens: pd.DataFrame):
    """A `sensitivity_table`'s settings (confidence thresholds, branch range), one bar each, coloured by length."""
    setting = "conf " + sens["confidence"] + ", branches " + sens["branches"]
    fig = _speedup_bars(sens.assign(setting=setting), "Phase 3 sensitivity: speedup over AR", x="setting",
                        color="max_new_tokens", hover_data=["vs_default", "tokens_per_round"])
    fig.update_layout(coloraxis_showscale=False)
    return fig


def phase3_gain(chain: pd.DataFrame) -> pd.DataFrame:
    """Phase 3's `gain_over_fixed` per base depth and length beside the research's gain at 500 tokens (a base depth
    only one side measured keeps its row, the other side blank)."""
    ours = chain[chain["stage"] == "phase 3"][["base_depth", "max_new_tokens", "gain_over_fixed"]]
    ours = ours.assign(base_depth=ours["base_depth"].astype(int))
    theirs = research.ABLATION_GAIN_500.rename(columns={"gain": "research_gain_500_tokens"})
    both = ours.merge(theirs, on="base_depth", how="outer")
    return both.sort_values(["base_depth", "max_new_tokens"]).reset_index(drop=True)


def gain_numbers(gain: pd.DataFrame) -> dict:
    """From `phase3_gain`: in how many of the measured (base depth, length) pairs phase 3 beat the fixed tree, its
    smallest and largest gain, and where the largest was."""
    here = gain.dropna(subset=["gain_over_fixed"])
    if here.empty:
        raise ValueError("no phase 3 gain over the fixed tree was measured")
    best = here.loc[here["gain_over_fixed"].idxmax()]
    return {"cases": len(here), "wins": int((here["gain_over_fixed"] > 0).sum()),
            "gain_min": float(here["gain_over_fixed"].min()), "gain_max": float(best["gain_over_fixed"]),
            "best_depth": int(best["base_depth"]), "best_tokens": int(best["max_new_tokens"])}


def research_table(df: pd.DataFrame) -> pd.DataFrame:
    """The research's adaptive-tree table (its speedup, acceptance, tokens per round) with ours beside, one block
    per length measured here (`ours_new_tokens`). `df`: the ablation's rows."""
    theirs = research.ADAPTIVE_1000[research.ADAPTIVE_1000["method"].isin(RESEARCH_STAGES)]
    columns = ["speedup", "acceptance", "tokens_per_round"]
    return pd.concat([tables.beside_research(theirs, part, RESEARCH_STAGES, columns).reset_index()
                      .assign(ours_new_tokens=n) for n, part in tables.per_config(df).groupby("max_new_tokens")])


def sensitivity_numbers(sens: pd.DataFrame) -> dict:
    """From a `sensitivity_table`: the fastest setting (over every length) and its speedup, and what a minimum branch
    of 2 instead of 1 changed against the default (its first row; NaN when that setting was not run)."""
    best = sens.loc[sens["speedup"].idxmax()]
    min2 = sens[sens["branches"].str.startswith("[2,")]
    return {"best_confidence": best["confidence"], "best_branches": best["branches"],
            "best_speedup": float(best["speedup"]),
            "min2_change": float(min2["vs_default"].iloc[0]) - 1 if len(min2) else math.nan}


def research_numbers() -> dict:
    """What the research reported about the phases and their settings, as the chapter's prose writes it."""
    gain, best = research.ABLATION_GAIN_500, research.SENSITIVITY
    return {"setup": research.SETUP,
            "gains": ", ".join(f"{g:+.0%}" for g in gain["gain"]),
            "depths": ", ".join(str(d) for d in gain["base_depth"]),
            "confidence": "{:g}/{:g}".format(*best["best_conf"]),
            "branch_range": str(list(best["best_branch_range"])),
            "min2_loss": best["min_branch_2_loss"], "min2_change": -best["min_branch_2_loss"],
            "gain_by_length": ", ".join(f"{g:+.1%} at {n} tokens"
                                        for n, g in research.ADAPTIVE_GAIN_BY_LENGTH.items())}
