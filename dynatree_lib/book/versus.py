"""One method against one peer, both measured in one process: the sentence a chapter and the intro state about it.

A separate run of a few methods (for instance the bf16-draft default beside transformers' assisted generation with
that draft, at a length the main speed table did not measure the peer at) is summarised from its own rows, so
every ratio in the sentence divides two walls of that process.
"""
from __future__ import annotations

import pandas as pd

from ..bench.storage import distinct
from .tables import _fmt_x, goal_table, prompts_described


def versus_line(df: pd.DataFrame, method: str, peer: str, length: int, source: str) -> str:
    """Markdown: `method`'s median and worst-prompt speedup over AR and over `peer` (per prompt, the ratio of the two
    same-process speedups) at `length` new tokens, with what and where it was measured."""
    table = goal_table(df, length, peer).set_index("method")  # refuses a length or peer without rows
    part = df[df["max_new_tokens"] == length]
    if method not in table.index:
        raise ValueError(f"no {method} rows at {length} tokens in {source}: methods stored {sorted(table.index)}")
    row = table.loc[method]
    commits = ", ".join(distinct(part, "git_commit", 7)) or "unknown"
    dates = ", ".join(distinct(part, "date_utc", 10)) or "unknown"
    return (f"`{method}` at {length} new tokens, {prompts_described(part)}: {_fmt_x(row['speedup_ar'])} over AR "
            f"(worst prompt {_fmt_x(row['speedup_ar_min'])}) and {_fmt_x(row[f'speedup_vs_{peer}'])} over `{peer}` "
            f"(worst prompt {_fmt_x(row[f'speedup_vs_{peer}_min'])}); medians over prompts of ratios of walls "
            f"measured in one process (`{source}`, commit {commits}, {dates}).")
