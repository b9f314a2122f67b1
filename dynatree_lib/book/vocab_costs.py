"""What a frequency-trimmed draft vocabulary (FR-Spec, `draft_vocab=K`) buys and costs, from the rows that
`benchmarks/vocab_costs.py` stores (data/results/vocab_costs.csv): the time of one draft level for each K against
the full vocabulary (same process, interleaved repetitions, so only the ratios travel between machines), and, on
held-out texts, how often the target's next token falls outside the K kept tokens and how often the trimmed draft's
top-1 still agrees with the target.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .plots import _figure, _require

FULL = "full"


def _k_order(ks) -> list[str]:
    """'full' first, then K from large to small."""
    ks = [str(k) for k in dict.fromkeys(ks)]
    return [k for k in ks if k == FULL] + sorted((k for k in ks if k != FULL), key=int, reverse=True)


def vocab_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per K: median ms of a draft level at each node count, the cost over the full vocabulary's at the same
    node count (`level_vs_full_<n>`), and over the held-out texts (weighted by positions) the share of target tokens
    outside the kept K and the draft's top-1 agreement with the target (and its change against the full vocabulary)."""
    _require(df, ["measure", "K"])
    df = df.assign(K=df["K"].astype(str))
    order = _k_order(df["K"])
    if FULL not in order:
        raise ValueError("no rows for the full vocabulary (K=full): nothing to compare against")
    out = pd.DataFrame(index=pd.Index(order, name="K"))
    cost = df[df["measure"] == "draft_level_cost"]
    cost = cost.assign(nodes=cost["nodes"].astype(int))  # a float column where acceptance rows leave it empty
    if not cost.empty:
        ms = cost.pivot_table(index="K", columns="nodes", values="median_s").reindex(order) * 1e3
        for n in ms.columns:
            out[f"level_ms_{n}"] = ms[n]
            out[f"level_vs_full_{n}"] = ms[n] / ms.loc[FULL, n]
    acc = df[df["measure"] == "acceptance"]
    if not acc.empty:
        weights = acc["positions"].astype(float)
        for column in ("target_outside_K", "draft_top1_agrees"):
            weighted = (acc[column].astype(float) * weights).groupby(acc["K"]).sum()
            out[column] = (weighted / weights.groupby(acc["K"]).sum()).reindex(order)
        out["agreement_change"] = out["draft_top1_agrees"] - out.loc[FULL, "draft_top1_agrees"]
    return out.reset_index()


def vocab_figure(df: pd.DataFrame, title: str | None = "A trimmed draft vocabulary: cost of a level and agreement"
                 ) -> go.Figure:
    """Draft level cost over the full vocabulary's (one line per node count) and the draft's top-1 agreement with the
    target (right axis), against K."""
    table = vocab_table(df)
    fig = _figure(title, xaxis_title="draft vocabulary K (tokens the draft scores)",
                  yaxis_title="draft level cost / full vocabulary's",
                  yaxis2=dict(title="draft top-1 agrees with target", overlaying="y", side="right",
                              rangemode="tozero", showgrid=False))
    for column in (c for c in table.columns if c.startswith("level_vs_full_")):
        nodes = column.removeprefix("level_vs_full_")
        fig.add_trace(go.Scatter(x=table["K"], y=table[column], mode="lines+markers",
                                 name=f"level cost, {nodes} node{'s' if nodes != '1' else ''}"))
    if "draft_top1_agrees" in table.columns:
        fig.add_trace(go.Scatter(x=table["K"], y=table["draft_top1_agrees"], mode="lines+markers", yaxis="y2",
                                 name="top-1 agreement", line=dict(dash="dot", color="#6b6b6b")))
    fig.update_xaxes(type="category")
    return fig
