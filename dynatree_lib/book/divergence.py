"""Where the speed table's bf16 runs leave bf16 plain decoding, and whether their text is worse after the flip.

Every row of a speed table records whether its tokens equal plain decoding's on the same prompt (`match_ar`), the
first position where they differ (`first_divergence`) and the perplexity of its generated tokens under the target
(`perplexity`). In bf16 a batched verification can pick the other token at a near-tie of the target's top two
logits; from there on the text is a different one, still the target's greedy continuation of its own context.

Also the quality chapter's other tables and glued values, so the chapter holds calls and prose: the live float32
and low-precision comparisons (`quality.compare_to_ar` tables: `exactness_summary`, `check_exact`, `live_values`,
`gap_figure`), the speed table's divergence (`speed_values`) and the flips regenerated with the target's gap at
each (`quality.flip_table`, data/results/flips.csv: `flip_rows`, `flip_values`).
"""
from __future__ import annotations

import pandas as pd

from .page import share


def _identical(values: pd.Series) -> pd.Series:
    # Booleans as bench.read_results gives them; a missing cell (a run with nothing to compare) is not identical.
    return values.eq(True)


def divergence_table(df: pd.DataFrame, length: int) -> pd.DataFrame:
    """Per method at `length` new tokens: runs, the share identical to plain decoding, the median first position of
    divergence and, over the runs that diverged, the median ratio of their perplexity to plain decoding's on the same
    prompt and the share of them whose perplexity is higher (worse)."""
    part = df[df["max_new_tokens"] == length].assign(identical=lambda d: _identical(d["match_ar"]))
    plain = part[part["method"] == "AR"].groupby("prompt_id")["perplexity"].median()
    if plain.empty:
        raise ValueError(f"no plain-decoding (AR) rows at {length} new tokens to compare with")
    rows = []
    for method, runs in part[part["method"] != "AR"].groupby("method", sort=False):
        diverged = runs[~runs["identical"]]
        ratio = diverged["perplexity"].to_numpy() / plain.reindex(diverged["prompt_id"]).to_numpy()
        rows.append({"method": method, "runs": len(runs), "identical": runs["identical"].mean(),
                     "first_divergence": diverged["first_divergence"].median(),
                     "perplexity_ratio": pd.Series(ratio).median(), "worse": (pd.Series(ratio) > 1).mean()})
    return pd.DataFrame(rows)


def shared_flips(df: pd.DataFrame, length: int) -> tuple[int, int]:
    """(prompts where every method that diverged parted from plain decoding at the same position, prompts where any
    diverged): a flip that every method meets is the target's near-tie, not one method's doing."""
    part = df[(df["max_new_tokens"] == length) & (df["method"] != "AR")]
    diverged = part[~_identical(part["match_ar"])]
    positions = diverged.groupby("prompt_id")["first_divergence"].nunique()
    return int((positions == 1).sum()), int(len(positions))


def identical_count(df: pd.DataFrame) -> str:
    """'7 of 9': how many runs (rows) equal plain decoding token for token."""
    return f"{int(_identical(df['match_ar']).sum())} of {len(df)}"


def exactness_summary(df: pd.DataFrame, by=("method",), extra: str = "tokens_per_round") -> pd.DataFrame:
    """Per method (and the other columns in `by`): prompts, the share of runs identical to plain decoding, the last
    first-divergence position (-1: none diverged), median perplexity and the median of `extra`."""
    return df.assign(match_ar=_identical(df["match_ar"])).groupby(list(by), sort=False).agg(
        prompts=("prompt_id", "nunique"), match_ar=("match_ar", "mean"), first_divergence=("first_divergence", "max"),
        perplexity=("perplexity", "median"), **{extra: (extra, "median")}).reset_index()


def check_exact(table: pd.DataFrame, near_tie: float = 64) -> pd.DataFrame:
    """The runs of a float32 `quality.compare_to_ar` table that left plain decoding; refused (ValueError) unless each
    did so at a genuine near-tie, a top-2 gap under `near_tie` ulps of float32 at the top logit: anything else is a
    bug, not rounding."""
    flips = table[~_identical(table["match_ar"])]
    wide = flips[~(flips["gap_ulps_at_divergence"] < near_tie)]  # a missing gap (NaN) is no near-tie either
    if len(wide):
        where = wide[["prompt_id", "method", "first_divergence", "gap_ulps_at_divergence"]].to_dict("records")
        raise ValueError(f"output differs from plain decoding away from a near-tie (gap >= {near_tie} ulps): {where}")
    return flips


def _span(values: pd.Series) -> str:
    return f"{values.min():.1f} to {values.max():.1f}"


def live_values(low: pd.DataFrame) -> dict:
    """Glue values for the live low-precision comparison (`quality.compare_to_ar` rows): how many runs are identical,
    the range of the top-2 gaps (in spacings of the dtype) where the others part, and of the smallest gap along each
    prompt's plain-decoding path."""
    diverged = low[~_identical(low["match_ar"])]
    return {"live_identical": identical_count(low),
            "live_flip_gaps": _span(diverged["gap_ulps_at_divergence"]) + " spacings" if len(diverged)
            else "nowhere: none diverged",
            "live_path_gaps": _span(low.groupby("prompt_id")["min_gap_ulps"].first())}


def gap_figure(pair, prompts: dict, low: pd.DataFrame, dtype: str):
    """Per prompt, the target's top-2 gap along the plain-decoding path (`quality.margins`, in spacings of `dtype`,
    log scale), with a cross where a method of `low` (a `quality.compare_to_ar` table) first left that path."""
    import plotly.graph_objects as go

    from ..bench.quality import margins
    from ..core.loop import encode
    from .plots import TEMPLATE

    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=f"Target's top-2 gap along the {dtype} AR path",
                      xaxis_title="generated position", yaxis_title=f"top-1 minus top-2 logit (ulp of {dtype})",
                      yaxis_type="log")
    for pid, text in prompts.items():
        ar_tokens = low[(low["prompt_id"] == pid) & (low["method"] == "AR")]["token_ids"].iloc[0]
        gaps = margins(pair.target, encode(pair, text), ar_tokens)
        fig.add_scatter(x=gaps["position"], y=gaps["gap_ulps"].clip(lower=0.1), mode="lines+markers", name=pid,
                        marker_size=4)
        here = low[(low["prompt_id"] == pid) & ~_identical(low["match_ar"])]
        if len(here):
            fig.add_scatter(x=here["first_divergence"], y=here["gap_ulps_at_divergence"].clip(lower=0.1),
                            mode="markers", marker=dict(symbol="x", size=12, color="#d9622b"),
                            name=f"{pid}: first divergence", text=here["method"],
                            hovertemplate="%{text}<br>position %{x}, gap %{y:.2f} ulp<extra></extra>")
    fig.add_hline(y=1, line_dash="dot", line_color="#6b6b6b", annotation_text="1 ulp")
    return fig


def speed_values(df: pd.DataFrame, length: int, lead: str, peer: str) -> dict:
    """Glue values for the speed table's runs at `length` new tokens (`divergence_table`, `shared_flips`): the share
    of `lead`'s and `peer`'s runs identical to plain decoding, `lead`'s median perplexity ratio after diverging and
    the share of its diverged runs that score worse, and on how many of the prompts where any method diverged every
    method did so at one position."""
    by_method = divergence_table(df, length).set_index("method")
    shared, prompts = shared_flips(df, length)
    return {"div_length": length, "div_identical_lead": share(by_method.loc[lead, "identical"]),
            "div_identical_peer": share(by_method.loc[peer, "identical"]),
            "div_ppl_lead": float(by_method.loc[lead, "perplexity_ratio"]),
            "div_worse_lead": share(by_method.loc[lead, "worse"]), "div_shared": shared, "div_prompts": prompts}


def flip_rows(flips: pd.DataFrame, tokenizer=None, speed: pd.DataFrame | None = None) -> pd.DataFrame:
    """The runs of a `quality.flip_table` (or data/results/flips.csv) that left plain decoding, as the book shows
    them: where, the target's top-2 gap there in spacings of the dtype, the two tokens, the perplexity ratio (the
    method's over plain decoding's) and both texts' share of repeated 4-grams. With `speed` (speed-table rows), the
    flip's position is followed by where the stored run of the same method, prompt and length first diverged, in
    parentheses (-1: it did not)."""
    from .tables import names
    from .treeviz import token_label

    diverged = flips[flips["first_divergence"] >= 0]
    shown = pd.DataFrame({
        "Method": names(diverged["method"]), "Prompt": diverged["prompt_id"].to_list(),
        "Flip at": diverged["first_divergence"].astype(int).to_list(),
        "Gap": diverged["gap_spacings"].to_list(),
        "Tokens (AR / method)": [f"{token_label(tokenizer, a)} / {token_label(tokenizer, b)}"
                                    for a, b in zip(diverged["ar_token"], diverged["method_token"])],
        "Perplexity ratio": (diverged["perplexity_method"] / diverged["perplexity_ar"]).to_list(),
        "Repeated 4-grams (AR / method)": [f"{a:.1%} / {b:.1%}" for a, b in
                                              zip(diverged["repeat4_ar"], diverged["repeat4_method"])]})
    if speed is not None:
        stored = speed.groupby(["method", "prompt_id", "max_new_tokens"])["first_divergence"].first()
        keys = zip(diverged["method"], diverged["prompt_id"], diverged["max_new_tokens"])
        timed = [int(stored.get(k, -1)) for k in keys]
        shown.insert(2, "Flip at (timed run)", [f"{a} ({b})" for a, b in zip(shown.pop("Flip at"), timed)])
    return shown


def _lengths(flips: pd.DataFrame) -> str:
    return " and ".join(str(n) for n in sorted(flips["max_new_tokens"].unique()))


def flip_values(flips: pd.DataFrame) -> dict:
    """Glue values for a `quality.flip_table`: its lengths and prompts, how many runs diverged, the widest top-2 gap
    at a flip (spacings of the dtype), and over the diverged runs the median perplexity ratio, how many score worse,
    the median share of repeated 4-grams of each text, how many repeat more than plain decoding and the median
    difference of the two shares (percentage points, signed)."""
    diverged = flips[flips["first_divergence"] >= 0]
    if diverged.empty:
        raise ValueError("no run in the flip table left plain decoding: nothing to show")
    ratio = diverged["perplexity_method"] / diverged["perplexity_ar"]
    more = diverged["repeat4_method"] > diverged["repeat4_ar"]
    return {"flip_length": _lengths(flips), "flip_prompts": flips["prompt_id"].nunique(),
            "flip_count": f"{len(diverged)} of {len(flips)}", "flip_gap_max": float(diverged["gap_spacings"].max()),
            "flip_ppl_ratio": float(ratio.median()), "flip_worse": f"{int((ratio > 1).sum())} of {len(diverged)}",
            "flip_rep_ar": f"{diverged['repeat4_ar'].median():.1%}",
            "flip_rep_method": f"{diverged['repeat4_method'].median():.1%}",
            "flip_rep_more": f"{int(more.sum())} of {len(diverged)}",
            "flip_rep_diff": f"{(diverged['repeat4_method'] - diverged['repeat4_ar']).median() * 100:+.1f}"}


def live_rows(low: pd.DataFrame, tokenizer=None) -> pd.DataFrame:
    """A `quality.compare_to_ar` table as the book shows it: the tokens where a run parts from plain decoding as
    readable text (blank where it did not), without the token lists."""
    from .treeviz import token_label

    readable = {column: [token_label(tokenizer, t) if pd.notna(t) else "" for t in low[column]]
                for column in ("ar_token", "method_token")}
    return low.assign(**readable).drop(columns=["token_ids", "dtype"])


def exact_rows(full: pd.DataFrame) -> pd.DataFrame:
    """Stored float32 runs of methods other than plain decoding, one row each: method name, prompt, length, whether
    identical to plain decoding and where the first difference is."""
    from .tables import named

    runs = named(full[full["method"] != "AR"][["method", "prompt_id", "max_new_tokens", "match_ar",
                                               "first_divergence"]])
    return runs.drop(columns="method").rename(columns={
        "name": "Method", "prompt_id": "Prompt", "max_new_tokens": "New tokens", "match_ar": "Identical to AR",
        "first_divergence": "First divergence (-1: none)"})


def perplexity_table(exact: pd.DataFrame, low: pd.DataFrame, dtype: str) -> pd.DataFrame:
    """Per method (display name first): the median perplexity of its float32 generations (`exact`) and of its `dtype`
    generations (`low`), both `quality.compare_to_ar` tables, and the share of the latter identical to plain
    decoding."""
    from .tables import named

    by = lambda df, column: df.groupby("method", sort=False)[column]  # noqa: E731
    ppl = pd.DataFrame({"float32": by(exact, "perplexity").median(), dtype: by(low, "perplexity").median(),
                        f"{dtype} matches AR": by(low.assign(match_ar=_identical(low["match_ar"])), "match_ar").mean()})
    return named(ppl.rename_axis("method").reset_index()).drop(columns="method").rename(columns={"name": "Method"})


def divergence_markdown(df: pd.DataFrame, length: int) -> str:
    """`divergence_table` at `length` as the chapter's numbered table tab-08-divergence."""
    from .page import table
    from .tables import named

    shown = named(divergence_table(df, length)).drop(columns="method").rename(columns={
        "name": "Method", "runs": "Runs", "identical": "Identical to plain decoding",
        "first_divergence": "First divergence (median position)",
        "perplexity_ratio": "Perplexity over plain decoding's", "worse": "Diverged runs with higher perplexity"})
    return table(shown, "tab-08-divergence",
                 f"The speed table's bf16 runs at {length} new tokens against bf16 plain decoding: how many are "
                 "identical, where the others part, and their perplexity under the target over plain decoding's "
                 "(diverged runs only).",
                 {"Identical to plain decoding": share, "Diverged runs with higher perplexity": share,
                  "Perplexity over plain decoding's": "{:.3f}".format})


def flips_markdown(flips: pd.DataFrame, tokenizer=None, speed: pd.DataFrame | None = None) -> str:
    """`flip_rows` as the chapter's numbered table tab-08-flips."""
    from .page import table

    lengths = _lengths(flips)
    dtype = ", ".join(sorted(flips["dtype"].unique()))
    return table(flip_rows(flips, tokenizer, speed), "tab-08-flips",
                 f"Every regenerated {dtype} run ({len(flips)} in all, {lengths} new tokens) that left {dtype} plain "
                 f"decoding: where (in parentheses, where the timed run of the speed table did; -1: it did not), the "
                 f"target's top-2 logit gap there (Gap) in spacings of {dtype}, plain decoding's "
                 "and the method's token, the perplexity of the method's text over plain decoding's, and the share of "
                 "repeated 4-grams in each.",
                 {"Gap": "{:.2f}".format, "Perplexity ratio": "{:.3f}".format})
