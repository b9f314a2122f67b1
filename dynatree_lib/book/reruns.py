"""Two runs of one benchmark configuration side by side: how far a method's same-process speedup moves when the
same prompts are measured again in another process, another day (the noise a single table cannot show)."""
from __future__ import annotations

import pandas as pd

from .tables import per_prompt

# `rerun_table`'s columns as a page heads them (after tables.named's `name`).
COLUMNS = {"name": "Method", "prompts": "Prompts", "speedup_first": "Other run", "speedup_second": "This table",
           "ratio_median": "Ratio, median", "ratio_min": "Ratio, lowest", "ratio_max": "Ratio, highest"}


def rerun_table(first: pd.DataFrame, second: pd.DataFrame, length: int, methods=None) -> pd.DataFrame:
    """Per method measured in both runs at `length` new tokens on the same prompts: the median speedup over AR in
    each, and per prompt the second run's speedup over the first's (median, lowest, highest). `methods` keeps and
    orders a subset."""
    runs = []
    for df in (first, second):
        part = df[df["max_new_tokens"] == length]
        if part.empty:
            raise ValueError(f"no rows at max_new_tokens={length}; lengths stored: "
                             f"{sorted(df['max_new_tokens'].unique())}")
        runs.append(per_prompt(part)[["method", "prompt_id", "speedup"]])
    both = runs[0].merge(runs[1], on=["method", "prompt_id"], suffixes=("_first", "_second"))
    if methods is not None:
        both = both[both["method"].isin(methods)]
    if both.empty:
        raise ValueError("the two runs share no (method, prompt) at this length")
    both["ratio"] = both["speedup_second"] / both["speedup_first"]
    table = (both.groupby("method", sort=False)
             .agg(prompts=("prompt_id", "nunique"), speedup_first=("speedup_first", "median"),
                  speedup_second=("speedup_second", "median"), ratio_median=("ratio", "median"),
                  ratio_min=("ratio", "min"), ratio_max=("ratio", "max"))
             .reset_index())
    if methods is not None:
        table = table.set_index("method").reindex([m for m in methods if m in set(table["method"])]).reset_index()
    return table
