"""The notes a chapter prints under its results: what was run, how, and where the rows came from."""
from __future__ import annotations

import pandas as pd

from ..bench.plans import PRESET_SIZES, _resolve, plan
from ..bench.harness import with_ar
from ..bench.storage import distinct
from ..bench.sweep import estimate_seconds
from ..methods.base import label

def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def plan_note(name: str, preset: str = "session") -> str:
    """Markdown: what a preset of an experiment runs (methods, prompts, lengths, repeats), for the notebooks."""
    p = plan(name, preset)
    labels = [label(m) for m in with_ar(p.methods)]
    shown = ", ".join(f"`{m}`" for m in labels[:16]) + (f", ... ({len(labels) - 16} more)" if len(labels) > 16 else "")
    if p.prompt_tokens:
        prompts = (f"{_count(p.prompts, 'stored ' + p.prompt_set + ' text')} cut to exactly "
                   f"{', '.join(map(str, p.prompt_tokens))} prompt tokens")
    else:
        prompts = (f"the first {_count(p.prompts, p.prompt_set + ' prompt')}" if p.prompts > 1
                   else f"the first {p.prompt_set} prompt")
    variants = f"; target variants: {', '.join(p.variants)}" if p.variants != ("base",) else ""
    seconds = estimate_seconds(name, preset)
    estimate = f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.0f} h"
    return (f"**Plan** (`{_resolve(name)}`, {preset} preset, {PRESET_SIZES[preset]}): {len(labels)} methods "
            f"({shown}); {prompts}; "
            f"{', '.join(map(str, p.lengths))} new tokens; {_count(p.repeats, 'timed run')} per configuration after "
            f"a warm-up of {p.warmup_tokens} tokens per method; dtype {p.dtype or 'as loaded'}{variants}. Estimated "
            f"{estimate} on the 2-core CPU."
            + (f" {p.note[0].upper()}{p.note[1:]}." if p.note else ""))


def data_note(df: pd.DataFrame) -> str:
    """Markdown: where the rows come from (file, pair, dtype, device, hardware, threads, code version, dates) and how
    complete they are. Notebooks print it under every loaded experiment."""
    def values(column):
        # provenance leaves gpu empty on a CPU
        return ", ".join(distinct(df, column)) or ("none" if column == "gpu" and column in df.columns else "?")

    commits = distinct(df, "git_commit", 10)
    # One CPU model name covers machines with and without bf16 arithmetic, which time a verification very differently.
    recorded = distinct(df, "cpu_bf16")
    bf16 = [word for value, word in (("True", "with"), ("False", "without")) if value in recorded]
    dirty = bool(df["git_dirty"].fillna(False).astype(bool).any()) if "git_dirty" in df.columns else False
    dates = distinct(df, "date_utc", 10)
    lines = [
        f"**Data:** {len(df)} rows of experiment `{df.attrs.get('experiment', '?')}` "
        f"({df.attrs.get('preset', '?')} preset) from `{df.attrs.get('source', '?')}`.",
        f"Pair {values('pair')}; dtype {values('dtype')}; device {values('device')}; CPU {values('cpu')}"
        + (f" ({' and '.join(bf16)} bf16 arithmetic)" if bf16 else "") + "; "
        f"GPU {values('gpu')}; torch threads {values('torch_threads')}; torch {values('torch_version')}, "
        f"transformers {values('transformers_version')}.",
        f"Code: commit {', '.join(commits) or '?'}{' with uncommitted changes' if dirty else ''}; "
        f"measured {dates[0] if dates else '?'}"
        + (f" to {dates[-1]}" if dates and dates[-1] != dates[0] else "") + ".",
    ]
    missing = df.attrs.get("missing", 0)
    if missing:
        lines.append(f"**Incomplete:** {missing} planned configuration(s) are not stored yet; the tables below show "
                     f"what is.")
    if df.attrs.get("smoke_fallback"):
        lines.append("**Smoke run:** these rows come from a live run of the smoke preset, not from stored results; "
                     "they are not measurements.")
    return "  \n".join(lines)
