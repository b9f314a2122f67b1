"""Figures for the book: each helper takes a tidy results DataFrame (rows as `bench.run_benchmark` writes them)
and returns a plotly Figure in one shared template, so notebooks hold only calls and prose.

Aggregation is the same everywhere: a prompt's value is the median over its repeats; a method's value is the median
over prompts, with the range over prompts as error bars. Method colours are stable across figures: one hue per
family (AR grey, transformers' peers purple/brown, Linear blue, FixedTree green, anything else orange/red), shades
within a family. Figures embed no remote resources; `save_html` writes a self-contained file for offline reading.
"""
from __future__ import annotations

import colorsys
import re

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "dynatree"
pio.templates[TEMPLATE] = go.layout.Template(pio.templates["plotly_white"])
pio.templates[TEMPLATE].layout.update(
    font=dict(family="Helvetica, Arial, sans-serif", size=13),
    title=dict(x=0.02, xanchor="left"),
    # The legend sits under the plot, never over the title: its own strip at the bottom of the figure.
    margin=dict(l=60, r=20, t=60, b=120),
    legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.01, x=0, title=None),
    hoverlabel=dict(namelength=-1),
)

_FAMILIES = [  # (label prefix, base colour), in display order
    ("AR", "#6b6b6b"),
    ("HFAssisted", "#7b4fa6"),
    ("HFPromptLookup", "#8c564b"),
    ("Linear", "#2f6db5"),
    ("FixedTree", "#2e8b57"),
    ("", "#d9622b"),  # anything else (adaptive trees, streaming, ...)
]
PHASE_COLORS = {"prefill": "#9e9e9e", "draft": "#2f6db5", "verify": "#d9622b", "commit": "#2e8b57"}


def _family(method: str) -> int:
    for i, (prefix, _) in enumerate(_FAMILIES):
        if method == prefix or (prefix and method.startswith(prefix + "(")) or not prefix:
            return i
    return len(_FAMILIES) - 1


def method_order(methods) -> list[str]:
    """Unique method labels, by family (AR first), then numerically by their parameters."""
    def natural(s):
        return [float(t) if re.fullmatch(r"\d+(\.\d+)?", t) else t for t in re.split(r"(\d+(?:\.\d+)?)", s)]

    unique = list(dict.fromkeys(methods))
    return sorted(unique, key=lambda m: (_family(m), [(isinstance(t, str), t) for t in natural(m)]))


def _shade(hex_color: str, i: int, n: int) -> str:
    r, g, b = (int(hex_color[k:k + 2], 16) / 255 for k in (1, 3, 5))
    h, l, s = colorsys.rgb_to_hls(r, g, b)
    if n > 1:  # spread lightness from darker to lighter around the base colour
        l = min(0.85, max(0.2, l + (i / (n - 1) - 0.5) * 0.4))
    r, g, b = colorsys.hls_to_rgb(h, l, s)
    return "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (r, g, b)))


def color_map(methods) -> dict[str, str]:
    """A stable colour per method label."""
    ordered = method_order(methods)
    colors = {}
    for fam, (_, base) in enumerate(_FAMILIES):
        members = [m for m in ordered if _family(m) == fam]
        for i, m in enumerate(members):
            colors[m] = _shade(base, i, len(members))
    return colors


def _per_prompt(df: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    _require(df, [value, "prompt_id", *by])
    return df.groupby([*by, "prompt_id"], sort=False)[value].median().reset_index()


def _over_prompts(df: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    per = _per_prompt(df, value, by)
    return per.groupby(by, sort=False)[value].agg(["median", "min", "max", "count"]).reset_index()


def _require(df: pd.DataFrame, columns) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"the DataFrame lacks column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise ValueError("the DataFrame is empty")


def _figure(title: str | None, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=title, **layout)
    return fig


def switcher(figures: dict, label: str = "") -> go.Figure:
    """One figure that shows one of `figures` at a time, picked from a dropdown (`label` prefixes its entries): the
    figures' traces stacked, each entry making one figure's traces visible with its own title and axis ranges, so
    a page holds several related figures as one numbered figure."""
    if not figures:
        raise ValueError("no figures to switch between")
    names = list(figures)
    fig = go.Figure(layout=figures[names[0]].layout)
    spans = []
    for name in names:
        start = len(fig.data)
        for trace in figures[name].data:
            fig.add_trace(trace)
            fig.data[-1].visible = name == names[0]
        spans.append((start, len(fig.data)))
    buttons = []
    for name, (a, b) in zip(names, spans):
        layout = figures[name].layout
        view = {"title.text": layout.title.text, "xaxis.range": layout.xaxis.range, "yaxis.range": layout.yaxis.range}
        buttons.append(dict(label=f"{label}{name}", method="update",
                            args=[{"visible": [a <= i < b for i in range(len(fig.data))]}, view]))
    fig.update_layout(height=max((f.layout.height or 450) for f in figures.values()),
                      updatemenus=[dict(type="dropdown", buttons=buttons, active=0, x=1, xanchor="right",
                                        y=1.02, yanchor="bottom", pad=dict(t=0, r=0))])
    return fig


def speedup_bar(df: pd.DataFrame, value: str = "speedup", title: str | None = "Speedup over AR") -> go.Figure:
    """Median `value` per method (range over prompts as error bars), one group of bars per max_new_tokens."""
    agg = _over_prompts(df, value, ["method", "max_new_tokens"])
    order = method_order(agg["method"])
    colors = color_map(order)
    lengths = sorted(agg["max_new_tokens"].unique())
    fig = _figure(title, barmode="group", xaxis_title="method", yaxis_title=value, showlegend=len(lengths) > 1)
    for n in lengths:
        part = agg[agg["max_new_tokens"] == n].set_index("method").reindex([m for m in order if m in set(agg["method"])])
        part = part.dropna(subset=["median"])
        fig.add_bar(
            x=list(part.index), y=part["median"], name=f"{n} tokens",
            marker_color=[colors[m] for m in part.index] if len(lengths) == 1 else None,
            error_y=dict(type="data", symmetric=False, array=part["max"] - part["median"],
                         arrayminus=part["median"] - part["min"]),
            text=[f"{v:.2f}" for v in part["median"]], textposition="outside",
            customdata=part[["min", "max", "count"]],
            hovertemplate="%{x}<br>median %{y:.3f}<br>range %{customdata[0]:.3f}..%{customdata[1]:.3f}"
                          "<br>%{customdata[2]} prompt(s)<extra></extra>",
        )
    if value == "speedup":
        fig.add_hline(y=1.0, line_dash="dot", line_color=colors.get("AR", "#6b6b6b"))
    return fig


def throughput_vs_length(df: pd.DataFrame, value: str = "tokens_per_s",
                         title: str | None = "Throughput over generation length") -> go.Figure:
    """Median `value` over prompts against max_new_tokens, one line per method (range over prompts as bars)."""
    agg = _over_prompts(df, value, ["method", "max_new_tokens"]).sort_values("max_new_tokens")
    colors = color_map(agg["method"])
    fig = _figure(title, xaxis_title="new tokens", yaxis_title=value)
    for m in method_order(agg["method"]):
        part = agg[agg["method"] == m]
        fig.add_scatter(
            x=part["max_new_tokens"], y=part["median"], name=m, mode="lines+markers",
            line_color=colors[m],
            error_y=dict(type="data", symmetric=False, array=part["max"] - part["median"],
                         arrayminus=part["median"] - part["min"], thickness=1),
        )
    return fig


def heatmap(df: pd.DataFrame, x: str, y: str, value: str = "speedup", agg: str = "median",
            title: str | None = None) -> go.Figure:
    """`agg` of `value` on an x-by-y grid (e.g. depth x branch; see `bench.with_params`), annotated with values."""
    _require(df, [x, y, value])
    grid = df.pivot_table(index=y, columns=x, values=value, aggfunc=agg).sort_index().sort_index(axis=1)
    fig = _figure(title or f"{value} ({agg}) by {x} and {y}", xaxis_title=x, yaxis_title=y)
    fig.add_heatmap(
        z=grid.to_numpy(), x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index],
        colorscale="Viridis", texttemplate="%{z:.2f}", colorbar_title=value,
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{value}=%{{z:.3f}}<extra></extra>",
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def timeline_frame(traces) -> pd.DataFrame:
    """Draft/verify/commit segments on one time axis per method, from {label: Generation | trace records}.

    A Generation contributes a prefill segment (its TTFT) before its rounds; bare trace records start at 0.
    """
    rows = []
    for name, item in traces.items():
        records = item.trace if hasattr(item, "trace") else list(item.to_dict("records") if isinstance(
            item, pd.DataFrame) else item)
        t = 0.0
        stats = getattr(item, "stats", None)
        if stats and stats.get("ttft_s") is not None:
            rows.append(dict(method=name, round=-1, phase="prefill", start_s=0.0, seconds=stats["ttft_s"],
                             accepted=0, committed=1))
            t = stats["ttft_s"]
        for i, rec in enumerate(records):
            for phase in ("draft", "verify", "commit"):
                seconds = rec.get(f"{phase}_s", 0.0) or 0.0
                if seconds > 0:
                    rows.append(dict(method=name, round=i, phase=phase, start_s=t, seconds=seconds,
                                     accepted=rec.get("accepted", 0), committed=rec.get("committed", 0)))
                t += seconds
    return pd.DataFrame(rows, columns=["method", "round", "phase", "start_s", "seconds", "accepted", "committed"])


def timeline(traces, title: str | None = "Where the time goes, round by round") -> go.Figure:
    """Horizontal bars: one row per method, one segment per phase of every round, on a shared time axis (ms)."""
    frame = timeline_frame(traces)
    if frame.empty:
        raise ValueError("no trace records to draw (transformers' peers keep no per-round trace)")
    methods = list(traces)
    fig = _figure(title, barmode="overlay", xaxis_title="time since start (ms)",
                  yaxis=dict(categoryorder="array", categoryarray=methods[::-1]), bargap=0.35)
    for phase, color in PHASE_COLORS.items():
        part = frame[frame["phase"] == phase]
        if part.empty:
            continue
        fig.add_bar(
            y=part["method"], x=part["seconds"] * 1e3, base=part["start_s"] * 1e3, orientation="h", name=phase,
            marker_color=color, marker_line_width=0.5, marker_line_color="white",
            customdata=part[["round", "accepted", "committed"]],
            hovertemplate=f"{phase}" + " round %{customdata[0]}<br>%{base:.1f} ms + %{x:.2f} ms"
                          "<br>accepted %{customdata[1]}, committed %{customdata[2]}<extra></extra>",
        )
    return fig


ACCEPTANCE_COLUMNS = {
    "tokens_per_round": "tokens / round",
    "acceptance_depth": "accepted depth / tree depth",
    "acceptance_nodes": "accepted / drafted nodes",
    "speedup": "speedup",
}


def summary_table(df: pd.DataFrame, columns: dict[str, str], title: str | None = None, digits: int = 3) -> go.Figure:
    """A plotly table: one row per method, the median over prompts (of medians over repeats) of each column."""
    _require(df, list(columns))
    per = df.groupby(["method", "prompt_id"], sort=False)[list(columns)].median()
    med = per.groupby("method", sort=False).median()
    med = med.reindex(method_order(med.index))
    cells = [list(med.index)] + [[("-" if pd.isna(v) else f"{v:.{digits}g}") for v in med[c]] for c in columns]
    fig = _figure(title)
    fig.add_table(
        header=dict(values=["method", *columns.values()], fill_color="#eeeeee", align="left",
                    font=dict(size=13)),
        cells=dict(values=cells, align="left", height=26),
        columnwidth=[max(12, max(len(m) for m in med.index))] + [12] * len(columns),
    )
    fig.update_layout(margin=dict(l=10, r=10, t=50 if title else 10, b=10),
                      height=(60 if title else 20) + 40 + 26 * len(med))
    return fig


def acceptance_table(df: pd.DataFrame, title: str | None = "Acceptance per method") -> go.Figure:
    """Tokens per round, accepted depth share, accepted node share and speedup per method."""
    columns = {c: name for c, name in ACCEPTANCE_COLUMNS.items() if c in df.columns}
    return summary_table(df, columns, title)


def save_html(fig: go.Figure, path) -> None:
    """A self-contained HTML file (plotly.js inlined): opens offline, no CDN."""
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
