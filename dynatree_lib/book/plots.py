"""Figures for the book: each helper takes a tidy results DataFrame (rows as `bench.run_benchmark` writes them)
and returns a plotly Figure in one shared template, so notebooks hold only calls and prose.

Method colours are stable across figures: one hue per family (AR grey, transformers' peers purple/brown, Linear
blue, FixedTree green, anything else orange/red), shades within a family. Figures embed no remote resources.
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
