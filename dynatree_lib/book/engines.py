"""Two engines on one CPU: llama.cpp's plain and speculative decoding of the GGUF files beside this library's methods,
on the same prompts and lengths.

Each engine's speedup is over its own plain decoding (per prompt, the ratio of two runs of one engine), the ratio
speculative decoding is judged by. Tokens per second across engines compare two processes run one after the other on
the same machine (prefill included, as every table of this book counts them); `Over llama.cpp plain` is that
per-prompt ratio, the number a CPU user who only wants speed asks for.
"""
from __future__ import annotations

import pandas as pd

from ..bench.llama_cpp import llama_cpp_table
from ..methods.base import Autoregressive
from . import page
from .tables import method_of, names

# What each llama.cpp configuration of benchmarks/llama_cpp.py is, in words.
LLAMA_CPP_NAMES = {
    "plain": "plain decoding",
    "draft": "0.5B draft, its defaults",
    "ngram-simple": "n-gram drafting (simple)",
    "ngram-mod": "n-gram drafting (mod)",
    "ngram-cache": "n-gram drafting (cache)",
    "lookup": "prompt lookup (llama-lookup)",
}


def _llama_cpp_name(config: str) -> str:
    if config in LLAMA_CPP_NAMES:
        return LLAMA_CPP_NAMES[config]
    kind, _, settings = config.partition(" ")
    return f"0.5B draft, {'tree, ' if kind == 'tree' else ''}{settings.replace('_', '-')}"


def _weights(pair: str, method: str) -> str:
    """The weights a row decoded with: the target's from the pair's name (models.pair.quantized_name), the draft's from
    the method's own `draft_bits` (plain decoding has none)."""
    target = pair.rpartition("+")[2] if "+int" in pair else "bf16"
    m = method_of(method)
    if isinstance(m, Autoregressive):
        return f"{target} target"
    return f"{target} target, {f'int{m.draft_bits}' if m.draft_bits else 'bf16'} draft"


FORMATS = {"Tokens/s": "{:.1f}".format, "Over own plain": page.times, "Over llama.cpp plain": page.times,
           "Same as own plain": page.share}  # engines_table's columns on a page


def engines_table(llama: pd.DataFrame, ours: pd.DataFrame, length: int) -> pd.DataFrame:
    """One row per engine and configuration at `length` new tokens, fastest first: Engine, Configuration, Weights,
    Prompts, Tokens/s (median over prompts), Over own plain and Over llama.cpp plain (medians of per-prompt ratios),
    Same as own plain (the share of runs whose text or tokens equal the engine's own plain decoding)."""
    llama = llama[llama["max_new_tokens"] == length]
    ours = ours[ours["max_new_tokens"] == length]
    if llama.empty or ours.empty:
        raise ValueError(f"need rows of both engines at {length} new tokens (llama.cpp: {len(llama)}, ours: "
                         f"{len(ours)})")
    plain = llama[llama["config"] == "plain"].groupby("prompt_id")["tokens_per_s"].median()
    rows = []
    for _, r in llama_cpp_table(llama).iterrows():
        per = llama[llama["config"] == r["config"]].groupby("prompt_id")["tokens_per_s"].median()
        rows.append({"Engine": "llama.cpp", "Configuration": _llama_cpp_name(r["config"]),
                     "Weights": "Q4_K_M target" if r["config"] == "plain" else "Q4_K_M target, Q5_0/Q8_0 draft",
                     "Prompts": r["prompts"], "Tokens/s": r["tokens_per_s"], "Over own plain": r["speedup"],
                     "Over llama.cpp plain": (per / plain).median(), "Same as own plain": r["same_as_plain"]})
    for (method, pair), group in ours.groupby(["method", "pair"], sort=False):
        per = group.groupby("prompt_id").agg(tps=("tokens_per_s", "median"), own=("speedup_vs_ar", "median"))
        rows.append({"Engine": "DynaTree library", "Configuration": names([method])[0],
                     "Weights": _weights(pair, method), "Prompts": len(per), "Tokens/s": per["tps"].median(),
                     "Over own plain": per["own"].median(),
                     "Over llama.cpp plain": (per["tps"] / plain.reindex(per.index)).median(),
                     "Same as own plain": group["match_ar"].mean()})
    return pd.DataFrame(rows).sort_values("Tokens/s", ascending=False, ignore_index=True)


def engines_numbers(both: pd.DataFrame) -> dict:
    """What the prose says of `engines_table`'s rows (for glue): llama.cpp's plain tokens/s and its best speculative
    configuration over its own plain decoding; this library's fastest row in tokens/s and over llama.cpp's plain
    decoding; the int4 target's best speculative row over that target's own plain decoding (nan when not stored)."""
    own = both[both["Engine"] == "llama.cpp"].set_index("Configuration")
    mine = both[both["Engine"] != "llama.cpp"]
    int4 = mine[mine["Weights"].str.startswith("int4 target") & (mine["Configuration"] != names(["AR"])[0])]
    return {"llama_plain_tps": float(own.loc[LLAMA_CPP_NAMES["plain"], "Tokens/s"]),
            "llama_best_spec": float(own.drop(LLAMA_CPP_NAMES["plain"])["Over own plain"].max()),
            "ours_best_tps": float(mine["Tokens/s"].iloc[0]),
            "ours_over_llama": float(mine["Over llama.cpp plain"].iloc[0]),
            "int4_own": float(int4["Over own plain"].max()) if len(int4) else float("nan")}
