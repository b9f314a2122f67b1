"""The book's verdict, computed from the speed table (data/results/speed.csv): does DynaTree beat the best chain and
transformers' assisted generation, by how much, where, and why, as three sentences, one figure and one short table.

Every number is a median over prompts of a per-prompt ratio measured in one process (`tables.per_prompt`); the
band in the figure is the range over prompts. Methods appear under names a reader can say aloud; the full
configuration is one hover away.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from ..methods import DynaTree, HFAssisted, Linear, label
from ..methods.names import display_name
from . import page, plots
from .tables import method_of, names, per_prompt, round_costs, text_kind


@dataclass(frozen=True)
class Contender:
    method: object  # what was run (its label is the `method` cell of stored rows)
    color: str
    dash: str = "solid"

    @property
    def label(self) -> str:
        return label(self.method)

    @property
    def name(self) -> str:
        return display_name(self.method)


# The methods the verdict compares, in legend order. The int4 draft is the library's own weight-only quantization of
# the shipped 0.5B draft (methods' draft_bits=4); "as shipped" is that draft in bf16.
CONTENDERS = (
    Contender(DynaTree(draft_bits=4), "#d9622b"),
    Contender(Linear(k=5, draft_bits=4), "#2f6db5"),
    Contender(HFAssisted(draft_bits=4), "#7b4fa6"),
    Contender(DynaTree(), "#d9622b", "dash"),
    Contender(HFAssisted(), "#7b4fa6", "dash"),
)
LEAD, CHAIN, PEER, LEAD_SHIPPED, PEER_SHIPPED = CONTENDERS
KIND_ORDER = ("all", "code", "prose", "technical")
MIN_PROMPTS = 3


def speedups(speed: pd.DataFrame) -> pd.DataFrame:
    """One row per contender, length and prompt: speedup over plain decoding (the run's own reference, measured in
    the same process), tokens per round, whether the run was token-identical to bf16 AR, and the kind of text; lengths
    measured on at least MIN_PROMPTS prompts."""
    pp = per_prompt(speed)
    # a length measured on one or two prompts is an anecdote beside ten: the chapters show those rows, the verdict not
    prompts = pp.groupby("max_new_tokens")["prompt_id"].transform("nunique")
    pp = pp[prompts >= MIN_PROMPTS]
    names = {c.label: c.name for c in CONTENDERS}
    pp = pp[pp["method"].isin(names)].copy()
    pp["name"] = pp["method"].map(names)
    pp["kind"] = pp["prompt_id"].map(text_kind)
    return pp[["name", "method", "max_new_tokens", "prompt_id", "kind", "speedup", "tokens_per_round", "match_ar"]]


def _ratio(pp: pd.DataFrame, a: Contender, b: Contender, length: int, kind: str = "all") -> pd.Series:
    """Per prompt at `length`: a's speedup over b's, each over plain decoding measured in its own process (a
    method measured after the rest of its length brings its own plain-decoding reference)."""
    part = pp[(pp["max_new_tokens"] == length) & ((pp["kind"] == kind) | (kind == "all"))]
    s = part.pivot_table(index="prompt_id", columns="name", values="speedup")
    if a.name not in s or b.name not in s:
        return pd.Series(dtype=float)
    return (s[a.name] / s[b.name]).dropna()


def peer_of(method):
    """transformers' assisted generation given the same draft as `method` (None for a method without a draft)."""
    if not getattr(method, "needs_draft", False) or isinstance(method, HFAssisted):
        return None
    return HFAssisted(draft_bits=getattr(method, "draft_bits", None))


# How `summary`'s columns are written on a page (book.page.table / formatted).
FORMATS = {"Speedup": page.times, "Worst prompt": page.times, "Over transformers, same draft": page.times,
           "Tokens per forward": "{:.1f}".format, "Identical to bf16 AR": page.share}


def summary(speed: pd.DataFrame, length: int, methods=None) -> pd.DataFrame:
    """One row per method at `length` new tokens (the verdict's contenders, or every method stored when `methods` is
    "all"), fastest first: speedup over plain decoding (median, worst prompt), over transformers' assisted
    generation given the same draft (per prompt, each speedup over its own process's AR), tokens per target
    forward, the share of runs token-identical to AR in the same dtype (bf16 here: batched verification can flip
    near-ties, see the quality chapter), and the configuration."""
    pp = per_prompt(speed)
    part = pp[pp["max_new_tokens"] == length]
    if part.empty:
        stored = sorted(map(int, pp["max_new_tokens"].unique()))
        raise ValueError(f"no speed rows at {length} new tokens; stored: {stored}")
    labels = list(dict.fromkeys(part["method"])) if methods == "all" else [c.label for c in CONTENDERS]
    shown = dict(zip(labels, names(labels)))
    per = part.pivot_table(index="prompt_id", columns="method", values="speedup")
    rows = []
    for text in labels:
        mine = part[part["method"] == text]
        if mine.empty:
            continue
        peer = peer_of(method_of(text))
        vs = (per[text] / per[label(peer)]).dropna() if peer is not None and label(peer) in per else pd.Series([])
        rows.append({"Method": shown[text], "Speedup": mine["speedup"].median(), "Worst prompt": mine["speedup"].min(),
                     "Over transformers, same draft": vs.median() if len(vs) else float("nan"),
                     "Tokens per forward": mine["tokens_per_round"].median(),
                     "Identical to bf16 AR": mine["match_ar"].mean(), "Prompts": mine["prompt_id"].nunique(),
                     "Configuration": text})
    return pd.DataFrame(rows).sort_values("Speedup", ascending=False).reset_index(drop=True)


def numbers(speed: pd.DataFrame, short: int = 128, long: int = 512) -> dict:
    """The verdict's numbers (for MyST-NB glue or a generated page), each a median over prompts."""
    pp = speedups(speed)
    med = functools.partial(_median, pp)
    kinds = [k for k in KIND_ORDER[1:] if (pp["kind"] == k).any()]
    over_chain = {k: float(_ratio(pp, LEAD, CHAIN, long, k).median()) for k in kinds}
    best_kind = max(over_chain, key=over_chain.get)
    worst_kind = min(over_chain, key=over_chain.get)
    tpr = pp[pp["max_new_tokens"] == long].groupby("name")["tokens_per_round"].median()
    vs_peer_long = _ratio(pp, LEAD, PEER, long)
    return {
        "short": short, "long": long, "prompts": int(pp[pp["max_new_tokens"] == short]["prompt_id"].nunique()),
        "lead_short": med(LEAD, short), "lead_long": med(LEAD, long),
        "lead_vs_peer_short": float(_ratio(pp, LEAD, PEER, short).median()),
        "lead_vs_peer_long": float(vs_peer_long.median()), "lead_vs_peer_long_min": float(vs_peer_long.min()),
        "lead_vs_chain_short": float(_ratio(pp, LEAD, CHAIN, short).median()),
        "lead_vs_chain_long": float(_ratio(pp, LEAD, CHAIN, long).median()),
        "shipped_short": med(LEAD_SHIPPED, short), "shipped_long": med(LEAD_SHIPPED, long),
        "shipped_vs_peer_short": float(_ratio(pp, LEAD_SHIPPED, PEER_SHIPPED, short).median()),
        "shipped_vs_peer_long": float(_ratio(pp, LEAD_SHIPPED, PEER_SHIPPED, long).median()),
        "shipped_forwards": _forwards_per_token(speed, LEAD_SHIPPED, short),
        "peer_shipped_forwards": _forwards_per_token(speed, PEER_SHIPPED, short),
        "best_kind": best_kind, "best_kind_vs_chain": over_chain[best_kind],
        "worst_kind": worst_kind, "worst_kind_vs_chain": over_chain[worst_kind],
        "fastest_short": summary(speed, short, methods="all")["Method"].iloc[0],
        "fastest_long": summary(speed, long, methods="all")["Method"].iloc[0],
        "lead_tokens_long": float(tpr.get(LEAD.name, float("nan"))),
        "chain_tokens_long": float(tpr.get(CHAIN.name, float("nan"))),
    }


def _median(pp: pd.DataFrame, c: Contender, length: int, kind: str = "all") -> float:
    """`c`'s median speedup over plain decoding at `length` (`speedups` rows), over the prompts of one kind or all."""
    part = pp[(pp["name"] == c.name) & (pp["max_new_tokens"] == length)]
    part = part if kind == "all" else part[part["kind"] == kind]
    return float(part["speedup"].median())


def machine_numbers(speed: pd.DataFrame, length: int) -> dict:
    """The verdict's numbers at one length of a table, to set the machines of two tables side by side: the CPU, the
    prompts, how many times plain decoding was timed per prompt (the reference each speedup divides by), medians
    over prompts of the lead's and the shipped default's speedups, of the lead's over its peer's (with the lowest
    prompt) and over the chain's, and of the shipped default's over its peer's (NaN where the table lacks one), and
    what a machine's arithmetic decides: the share of plain decoding's time spent in the prefill, and the lead's
    tokens per target forward and one of its verifications in steps of plain decoding (`tables.round_costs`)."""
    at = speed[speed["max_new_tokens"] == length]
    pp = speedups(at)
    vs_peer = _ratio(pp, LEAD, PEER, length)
    vs = {name: float(_ratio(pp, a, b, length).median()) for name, a, b in (
        ("lead_vs_chain", LEAD, CHAIN), ("shipped_vs_peer", LEAD_SHIPPED, PEER_SHIPPED))}
    ar = at[at["method"] == "AR"]
    costs = round_costs(at).set_index("method").loc[LEAD.label]
    return {"cpu": " / ".join(dict.fromkeys(at["cpu"])), "prompts": int(pp["prompt_id"].nunique()),
            "reference_runs": int(ar.groupby("prompt_id")["repeat"].nunique().min()),
            "lead": _median(pp, LEAD, length), "shipped": _median(pp, LEAD_SHIPPED, length),
            "lead_vs_peer": float(vs_peer.median()), "lead_vs_peer_min": float(vs_peer.min()),
            "prefill_share": float((ar["ttft_s"] / ar["wall_s"]).median()),
            "tokens_per_forward": float(costs["tokens_per_round"]), "verify_steps": float(costs["verify_over_ar_step"]),
            **vs}


def _forwards_per_token(speed: pd.DataFrame, c: Contender, length: int) -> float:
    """Draft forwards per committed token of `c` at `length`, median over its runs."""
    part = speed[(speed["method"] == c.label) & (speed["max_new_tokens"] == length)]
    return float((part["draft_forwards"] / part["new_tokens"]).median())


def verdict(n: dict) -> str:
    """Three sentences: by how much, where, and why."""
    return (
        f"With the int4 draft, DynaTree decodes {n['lead_long']:.2f}x as fast as plain decoding at {n['long']} new "
        f"tokens ({n['lead_short']:.2f}x at {n['short']}) and {n['lead_vs_peer_long']:.2f}x as fast as transformers' "
        f"assisted generation given the same draft ({n['lead_vs_peer_short']:.2f}x at {n['short']}; slowest prompt "
        f"{n['lead_vs_peer_long_min']:.2f}x); in float32 its output is token for token the target's own. "
        f"Its lead over the best chain ({n['lead_vs_chain_short']:.2f}x at {n['short']} tokens, "
        f"{n['lead_vs_chain_long']:.2f}x at {n['long']}) is largest on {n['best_kind']} "
        f"({n['best_kind_vs_chain']:.2f}x) and smallest on {n['worst_kind']} ({n['worst_kind_vs_chain']:.2f}x), "
        f"because the tree commits {n['lead_tokens_long']:.1f} tokens per target forward against the chain's "
        f"{n['chain_tokens_long']:.1f} where the draft is often right but not always first. "
        f"With the draft as shipped (bf16, a draft forward costing a large share of a target step on a CPU), "
        f"DynaTree stages its drafting and spends {n['shipped_forwards']:.2f} draft forwards per committed token at "
        f"{n['short']} tokens against transformers' {n['peer_shipped_forwards']:.2f}: it gains less over plain "
        f"decoding ({_at_lengths(n, 'shipped')}) but leads transformers' assisted generation with that draft by more "
        f"({_at_lengths(n, 'shipped_vs_peer')}).")


def _at_lengths(n: dict, key: str) -> str:
    """'1.95x at 128 tokens, 3.45x at 512' from n[key_short] and n[key_long]; the short length alone where the long
    one was not measured (a contender without rows there)."""
    text = f"{n[key + '_short']:.2f}x at {n['short']} tokens"
    long = n.get(key + "_long", math.nan)
    return text if math.isnan(long) else f"{text}, {long:.2f}x at {n['long']}"


def figure(speed: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Speedup over plain decoding against generation length, one line per contender (median over prompts, the band
    the range over prompts), with buttons for the kind of text."""
    pp = speedups(speed)
    fig = plots._figure(title, height=460, hovermode="x unified",
                        xaxis=dict(title="new tokens generated", type="log",
                                   tickvals=sorted(pp["max_new_tokens"].unique())),
                        yaxis=dict(title="speedup over plain decoding (x)", rangemode="tozero"))
    kinds = [k for k in KIND_ORDER if k == "all" or (pp["kind"] == k).any()]
    per_kind = []
    for kind in kinds:
        part = pp if kind == "all" else pp[pp["kind"] == kind]
        traces = 0
        for c in CONTENDERS:
            mine = part[part["name"] == c.name]
            if mine.empty:
                continue
            g = mine.groupby("max_new_tokens")["speedup"].agg(["median", "min", "max", "count"]).reset_index()
            x = g["max_new_tokens"].tolist()
            visible = kind == "all"
            fill = c.color + "18"
            fig.add_trace(go.Scatter(x=x + x[::-1], y=g["max"].tolist() + g["min"].tolist()[::-1], fill="toself",
                                     mode="lines", fillcolor=fill, line=dict(width=0), hoverinfo="skip",
                                     showlegend=False, visible=visible, legendgroup=c.name))
            fig.add_trace(go.Scatter(
                x=x, y=g["median"], mode="lines+markers", name=c.name, legendgroup=c.name, visible=visible,
                line=dict(color=c.color, dash=c.dash, width=2.5),
                customdata=g[["min", "max", "count"]].to_numpy(),
                hovertemplate=(f"{c.name}: %{{y:.2f}}x (range %{{customdata[0]:.2f}}-%{{customdata[1]:.2f}}, "
                               f"%{{customdata[2]}} prompts)<br><sub>{c.label}</sub><extra></extra>")))
            traces += 2
        per_kind.append(traces)
    total = sum(per_kind)
    buttons, start = [], 0
    for kind, count in zip(kinds, per_kind):
        mask = [start <= i < start + count for i in range(total)]
        buttons.append(dict(label="all prompts" if kind == "all" else kind, method="update", args=[{"visible": mask}]))
        start += count
    fig.update_layout(
        margin=dict(l=60, r=20, t=70 if title else 50, b=130),
        updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=0, xanchor="left", y=1.12,
                          yanchor="top", showactive=True)])
    return fig


def bars(speed: pd.DataFrame, length: int, title: str | None = None) -> go.Figure:
    """Every method's speedup over plain decoding at `length` new tokens, fastest on top (median over prompts, the
    whiskers the range over prompts), with buttons for the kind of text; hover shows the full configuration."""
    pp = per_prompt(speed)
    pp = pp[pp["max_new_tokens"] == length].copy()
    if pp.empty:
        raise ValueError(f"no speed rows at {length} new tokens")
    pp["kind"] = pp["prompt_id"].map(text_kind)
    shown = dict(zip(pp["method"].unique(), names(pp["method"].unique())))
    kinds = [k for k in KIND_ORDER if k == "all" or (pp["kind"] == k).any()]
    fig = plots._figure(title, xaxis=dict(title="speedup over plain decoding (x)", rangemode="tozero"),
                        yaxis=dict(title=None, automargin=True), showlegend=False,
                        height=max(320, 34 * len(shown) + 140), margin=dict(l=20, r=20, t=70, b=50))
    for kind in kinds:
        part = pp if kind == "all" else pp[pp["kind"] == kind]
        g = part.groupby("method")["speedup"].agg(["median", "min", "max", "count"]).sort_values("median")
        fig.add_trace(go.Bar(
            x=g["median"], y=[shown[m] for m in g.index], orientation="h", visible=kind == "all",
            marker_color=[plots.color_map(g.index)[m] for m in g.index],
            error_x=dict(type="data", symmetric=False, array=g["max"] - g["median"],
                         arrayminus=g["median"] - g["min"], color="#555", thickness=1),
            customdata=list(zip(g.index, g["min"], g["max"], g["count"])),
            hovertemplate="%{y}: %{x:.2f}x (range %{customdata[1]:.2f}-%{customdata[2]:.2f}, "
                          "%{customdata[3]} prompts)<br><sub>%{customdata[0]}</sub><extra></extra>"))
    buttons = [dict(label="all prompts" if k == "all" else k, method="update",
                    args=[{"visible": [i == j for j in range(len(kinds))]}]) for i, k in enumerate(kinds)]
    fig.update_layout(updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=0, xanchor="left",
                                        y=1.0, yanchor="bottom", pad=dict(b=8), showactive=True)])
    return fig


def kind_table(speed: pd.DataFrame, lengths) -> pd.DataFrame:
    """Per contender and length, per kind of text: 'speedup · tokens per forward' (medians over that kind's
    prompts)."""
    pp = speedups(speed)
    pp = pp[pp["max_new_tokens"].isin(lengths)]
    g = pp.groupby(["name", "max_new_tokens", "kind"])[["speedup", "tokens_per_round"]].median()
    cells = (g["speedup"].map("{:.2f}x".format) + " · " + g["tokens_per_round"].map("{:.1f}".format)).unstack("kind")
    cells = cells[[k for k in KIND_ORDER if k in cells.columns]].fillna("")
    order = {c.name: i for i, c in enumerate(CONTENDERS)}
    cells = cells.reset_index().rename(columns={"name": "Method", "max_new_tokens": "New tokens"})
    return cells.sort_values(["New tokens", "Method"], key=lambda s: s.map(order) if s.name == "Method" else s)
