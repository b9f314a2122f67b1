"""The memory chapter's questions, asked of `tables.streaming_table` and `tables.int8_table`: the figures, and the
numbers its prose glues in (page.glue_numbers), beside what the research measured.

    st = tables.streaming_table(df)       each streaming cache beside the same method without one
    streaming_figures(st)                 speed against the unstreamed method, and compressions, per cache size
    streaming_numbers(st)                 best and worst cache, the share of runs equal to full-context AR
    int8_numbers(tables.int8_table(df))   weight bytes and speed with int8 weights
"""
from __future__ import annotations

import pandas as pd
import plotly.express as px

from . import research
from .page import inline_code, mib
from .plots import TEMPLATE


def research_numbers() -> dict:
    """What the research measured with streaming caches and int8 weights, as the chapter's prose writes it."""
    stream, int8 = research.STREAMING, research.INT8
    return {"setup": research.SETUP, "cache_512": stream["cache_512_at_2000_speedup"],
            "cache_2048": stream["cache_2048_at_2000_vs_tree"], "int8_backend": int8["backend"],
            "int8_saving": int8["memory_saving"], "int8_low": int8["speed_range"][0],
            "int8_high": int8["speed_range"][1]}


def streaming_figures(st: pd.DataFrame) -> tuple:
    """Two bar charts of `streaming_table` rows, per cache size and length: speed relative to the same method
    without a window (a dotted line at 1), and KV-cache compressions per generation."""
    st = st.assign(cache=st["cache_size"].astype(str))
    speed = px.bar(st, x="cache", y="vs_unstreamed", color="method", barmode="group", facet_col="max_new_tokens",
                   text_auto=".2f", template=TEMPLATE, hover_data=["kv_compressions", "speedup"],
                   title="Speed with a streaming cache, relative to the same method without one",
                   labels={"cache": "cache size (tokens)", "vs_unstreamed": "speed vs unstreamed"})
    speed.add_hline(y=1.0, line_dash="dot", line_color="#6b6b6b")
    compressions = px.bar(st, x="cache", y="kv_compressions", color="method", barmode="group",
                          facet_col="max_new_tokens", template=TEMPLATE,
                          title="KV-cache compressions per generation",
                          labels={"cache": "cache size (tokens)", "kv_compressions": "compressions"})
    return speed, compressions


def streaming_numbers(st: pd.DataFrame) -> dict:
    """From `streaming_table`: the cache sizes and lengths measured, the fastest and slowest configuration against
    the same method without a window, and the share of configurations whose output equals full-context AR's."""
    if st.empty:
        raise ValueError("no streaming configuration to summarise")
    ranked = st.dropna(subset=["vs_unstreamed"]).sort_values("vs_unstreamed")
    worst, best = ranked.iloc[0], ranked.iloc[-1]
    return {"caches": ", ".join(str(c) for c in sorted(set(st["cache_size"]))),
            "lengths": ", ".join(str(n) for n in sorted(set(st["max_new_tokens"]))),
            "best": float(best["vs_unstreamed"]), "best_cache": int(best["cache_size"]),
            "best_method": inline_code(best["method"]), "worst": float(worst["vs_unstreamed"]),
            "worst_cache": int(worst["cache_size"]), "worst_method": inline_code(worst["method"]),
            "compressions_max": int(st["kv_compressions"].max()), "exact": float(st["match_ar"].mean())}


def int8_figure(q: pd.DataFrame):
    """Throughput with the target as loaded and with int8 weights, per method and length (`int8_table` rows)."""
    speed = q.melt(id_vars=["method", "max_new_tokens"], value_vars=["base_tokens_per_s", "int8_tokens_per_s"],
                   var_name="weights", value_name="tokens_per_s")
    speed["weights"] = speed["weights"].map({"base_tokens_per_s": "as loaded", "int8_tokens_per_s": "int8"})
    return px.bar(speed, x="method", y="tokens_per_s", color="weights", barmode="group", facet_col="max_new_tokens",
                  text_auto=".2f", template=TEMPLATE, labels={"tokens_per_s": "tokens / s"},
                  title="Throughput with the target as loaded and with int8 weights")


def int8_numbers(q: pd.DataFrame) -> dict:
    """From `int8_table`: the target's weight bytes as loaded and with int8 linear layers, the saving, and the range
    of the per-method speed with int8 weights relative to the weights as loaded."""
    if q.empty:
        raise ValueError("no int8 comparison to summarise")
    row = q.iloc[0]
    return {"base": mib(row["base_target_bytes"]), "int8": mib(row["int8_target_bytes"]),
            "saving": float(row["memory_saving"]), "speed_low": float(q["int8_speed"].min()),
            "speed_high": float(q["int8_speed"].max()), "methods": len(q)}
