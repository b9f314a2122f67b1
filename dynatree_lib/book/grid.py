"""The research's whole grid as the book shows it: stored replay rows (bench.gridrun.evaluate) -> tables and figures.

A grid row is one (draft, policy, prompt, length): its rounds replayed from the target's greedy continuation and
the draft's candidates (exact, no policy run), and, where a calibration was given, its predicted wall time and
speedup (`measurement` says "predicted"). The timed validation rows (`grid_validation.csv`) set predictions beside
direct timings of the same (policy, prompt, length).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..bench.storage import results_dir
from ..models.provenance import repo_relative
from .gridcheck import (  # noqa: F401  (the chapter reads the validation through book.grid as well)
    ar_spread, ar_step_table, ar_steps, context_curves, context_figure, draft_of, error_table, forward_scales,
    part_errors, prediction_scatter, repeat_errors, validation_numbers)
from .plots import TEMPLATE, _require

SHAPE = ["depth", "branch", "threshold"]
CONFIG = ["draft", "method", "method_type", *SHAPE, "max_new_tokens"]


def load_grid(path=None, validation=None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The stored grid table (default data/results/grid.csv) and its timed validation (default
    data/results/replay/<pair>/grid_validation.csv of the table's pair; None when there is none)."""
    path = results_dir() / "grid.csv" if path is None else path
    df = pd.read_csv(path, dtype={"prompt_id": str})
    df.attrs.update(experiment="grid", preset="grid", source=repo_relative(path), folder=str(Path(path).parent))
    if validation is None and len(df):
        validation = units_root(df) / "grid_validation.csv"
    try:
        v = pd.read_csv(validation, dtype={"prompt_id": str}) if validation is not None else None
    except FileNotFoundError:
        v = None
    return df, v


def units_root(rows: pd.DataFrame, folder=None):
    """Where the stored units behind grid rows live: replay/<pair>/ beside the grid table (benchmarks/grid.py's
    layout: data/results/grid.csv and data/results/replay/<pair>/)."""
    from ..bench.grid import default_root

    return default_root(rows["pair"].iloc[0], folder or rows.attrs.get("folder"))


def grid_summary(df: pd.DataFrame, value: str = "speedup") -> pd.DataFrame:
    """One row per (draft, policy, length): the median over prompts of `value` and its worst prompt, tokens per round
    and acceptance (medians), how many prompts, and whether the value is predicted or timed. Best first."""
    _require(df, CONFIG + ["prompt_id", value, "tokens_per_round", "acceptance_depth"])
    g = df.groupby(CONFIG, dropna=False)
    out = g.agg(**{value: (value, "median"), f"{value}_min": (value, "min"),
                   "tokens_per_round": ("tokens_per_round", "median"),
                   "acceptance_depth": ("acceptance_depth", "median"),
                   "nodes_per_round": ("drafted_nodes", "sum"), "rounds": ("rounds", "sum"),
                   "prompts": ("prompt_id", "nunique")}).reset_index()
    out["nodes_per_round"] = out["nodes_per_round"] / out["rounds"]
    out["measurement"] = g["measurement"].first().to_numpy() if "measurement" in df else "replayed"
    return out.drop(columns="rounds").sort_values(value, ascending=False).reset_index(drop=True)


def best_per_length(summary: pd.DataFrame, research: pd.DataFrame | None = None, value: str = "speedup"):
    """Per draft and length: the best fixed tree (its shape), the best chain (Linear k), the tree's lead over the
    chain, and the research's best at that length beside them (`research`: max_new_tokens, speedup)."""
    rows = []
    for (draft, n), part in summary.groupby(["draft", "max_new_tokens"]):
        trees, chains = part[part["method_type"] == "FixedTree"], part[part["method_type"] == "Linear"]
        if trees.empty:
            continue
        tree = trees.loc[trees[value].idxmax()]
        row = {"draft": draft, "max_new_tokens": n, "depth": int(tree["depth"]), "branch": int(tree["branch"]),
               "threshold": tree["threshold"], f"best_tree_{value}": tree[value],
               "tree_tokens_per_round": tree["tokens_per_round"]}
        if not chains.empty:
            chain = chains.loc[chains[value].idxmax()]
            row.update({"best_chain": int(chain["depth"]), f"best_chain_{value}": chain[value],
                        "tree_over_chain": tree[value] / chain[value]})
        rows.append(row)
    out = pd.DataFrame(rows)
    if research is not None and len(out):
        out = out.merge(research.rename(columns={"speedup": "research_best_speedup"}), on="max_new_tokens",
                        how="left")
    return out


def rank_of(summary: pd.DataFrame, depth: int, branch: int, threshold: float, draft: str, n: int,
            value: str = "speedup") -> tuple[int, int] | None:
    """(rank, of how many) of one fixed-tree shape among the fixed trees of one draft and length; None if absent."""
    part = summary[(summary["draft"] == draft) & (summary["max_new_tokens"] == n)
                   & (summary["method_type"] == "FixedTree")].sort_values(value, ascending=False)
    part = part.reset_index(drop=True)
    hit = part[(part["depth"] == depth) & (part["branch"] == branch) & (part["threshold"] == threshold)]
    return None if hit.empty else (int(hit.index[0]) + 1, len(part))


def grid_heatmaps(summary: pd.DataFrame, draft: str, value: str = "speedup", title: str | None = None):
    """One heatmap of the median `value`: depth D across, one row per (threshold, branch), one colour scale for all
    lengths, and a dropdown for the generation length (the longest shown first)."""
    part = summary[(summary["draft"] == draft) & (summary["method_type"] == "FixedTree")]
    _require(part, SHAPE + ["max_new_tokens", value])
    lengths = sorted(part["max_new_tokens"].unique())
    lo, hi = part[value].min(), part[value].max()
    shown = lengths[-1]
    fig = go.Figure()
    for n in lengths:
        cell = part[part["max_new_tokens"] == n]
        z = cell.pivot_table(index=["threshold", "branch"], columns="depth", values=value).sort_index()
        z = z.sort_index(axis=1)
        rows = [f"τ = {t:g} · B = {b}" for t, b in z.index]
        fig.add_heatmap(z=z.to_numpy(), x=[str(c) for c in z.columns], y=rows, zmin=lo, zmax=hi,
                        colorscale="Viridis", colorbar=dict(title=dict(text=value.replace("_", " "))),
                        texttemplate="%{z:.2f}", textfont_size=11, visible=bool(n == shown),
                        hovertemplate=f"{n} tokens, %{{y}}, D = %{{x}}<br>{value} %{{z:.3f}}<extra></extra>")
    buttons = [dict(label=f"{n} new tokens", method="update", args=[{"visible": [m == n for m in lengths]}])
               for n in lengths]
    fig.update_layout(template=TEMPLATE, height=28 * len(fig.data[0].y) + 170,
                      title=title or f"Median {value.replace('_', ' ')} over prompts, {draft} draft",
                      xaxis=dict(type="category", title="depth D"),
                      yaxis=dict(type="category", title=None, autorange="reversed"),
                      margin=dict(t=90, b=60),
                      updatemenus=[dict(buttons=buttons, active=lengths.index(shown), x=1, xanchor="right", y=1.0,
                                        yanchor="bottom", pad=dict(b=6))])
    return fig


def load_checked(path=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stored grid and its timed validation (`load_grid`), refused with what to run when either is missing: the
    grid's speedups are predictions, and a page shows them only beside the timed check of the prediction."""
    try:
        rows, check = load_grid(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no replayed grid at {e.filename}: python benchmarks/grid.py writes one") from None
    if check is None or check.empty:
        raise FileNotFoundError(f"no timed validation beside {rows.attrs['source']}: python benchmarks/grid.py "
                                "(its --validate pairs, timed) writes replay/<pair>/grid_validation.csv")
    return rows, check


def grid_facts(rows: pd.DataFrame) -> dict:
    """What the grid holds, for the prose: policies per draft, lengths, prompts (and how many of each kind of
    text), replayed runs, the drafts, whether speedups are predicted or timed, and the calibrations' dates."""
    from .tables import text_kind

    kinds = rows.drop_duplicates("prompt_id")["prompt_id"].map(text_kind).value_counts().sort_index()
    kinds = kinds.sort_values(ascending=False, kind="stable")  # most prompts first, ties by name
    return {"policies": int(rows.groupby("draft")["method"].nunique().max()),
            "lengths": ", ".join(map(str, sorted(rows["max_new_tokens"].unique()))),
            "prompts": int(rows["prompt_id"].nunique()),
            "kinds": ", ".join(f"{n} {kind}" for kind, n in kinds.items()), "runs": int(len(rows)),
            "drafts": ", ".join(sorted(rows["draft"].unique())),
            "measured": ", ".join(sorted(rows["measurement"].unique())),
            "calibrated": ", ".join(sorted(rows["calibration_date"].astype(str).str[:10].unique()))}


def research_length(summary: pd.DataFrame, best: dict) -> int:
    """The length the research's best shape is compared at: its own (`best["max_new_tokens"]`) when the grid has
    it, else the grid's longest."""
    lengths = set(summary["max_new_tokens"])
    return int(best["max_new_tokens"]) if best["max_new_tokens"] in lengths else int(max(lengths))


def verdict_numbers(summary: pd.DataFrame, best_grid: pd.DataFrame, draft: str, best: dict) -> dict:
    """The chapter's verdict for one draft: the research's best shape (`best`: depth, branch, threshold,
    max_new_tokens, speedup) and its rank among this grid's fixed trees at that length, the best tree there and
    its median speedup, and the range over lengths of the best tree's lead over the best chain (`best_grid`, as
    `best_per_length` gives it)."""
    n = research_length(summary, best)
    trees = summary[(summary["draft"] == draft) & (summary["method_type"] == "FixedTree")
                    & (summary["max_new_tokens"] == n)]
    if trees.empty:
        raise ValueError(f"no fixed trees of draft {draft!r} at {n} new tokens in the grid")
    top = trees.loc[trees["speedup"].idxmax()]
    ranked = rank_of(summary, best["depth"], best["branch"], best["threshold"], draft, n)
    lead = best_grid.loc[best_grid["draft"] == draft, "tree_over_chain"]
    return {"r_depth": int(best["depth"]), "r_branch": int(best["branch"]), "r_threshold": float(best["threshold"]),
            "r_tokens": n, "r_speedup": float(best["speedup"]),
            "best_depth": int(top["depth"]), "best_branch": int(top["branch"]),
            "best_threshold": float(top["threshold"]), "best_speedup": float(top["speedup"]),
            "best_worst_prompt": float(top["speedup_min"]),
            "r_rank": ranked[0] if ranked else 0, "r_of": ranked[1] if ranked else len(trees),
            "lead_min": float(lead.min()), "lead_max": float(lead.max())}


def research_ranks(summary: pd.DataFrame, best_grid: pd.DataFrame, best: dict) -> pd.DataFrame:
    """Per draft: where the research's best shape ranks among the fixed trees at its length (`research_length`),
    and the lowest and highest lead of the best tree over the best chain across lengths."""
    n = research_length(summary, best)
    rows = []
    for draft, part in best_grid.groupby("draft"):
        ranked = rank_of(summary, best["depth"], best["branch"], best["threshold"], draft, n)
        rows.append({"draft": draft, "new tokens": n, "research shape's rank": ranked[0] if ranked else None,
                     "of trees": ranked[1] if ranked else None,
                     "tree over chain, lowest": part["tree_over_chain"].min(),
                     "tree over chain, highest": part["tree_over_chain"].max()})
    return pd.DataFrame(rows)


def sweep_facts(spent: pd.DataFrame) -> dict:
    """What computing the stored units took (`bench.gridrun.unit_costs` rows): hours of the machine's time from
    the first unit's start to the last one's end, worker-hours in all and of the target's continuations, the
    largest batches of each kind, torch threads per worker and the drafts replayed."""
    from ..bench.gridrun import acceptance_hours

    _require(spent, ["kind", "draft", "seconds", "batch", "threads", "date_utc"])
    batches = spent.groupby("kind")["batch"].max()
    return {"hours": float(acceptance_hours(spent)), "worker_hours": float(spent["seconds"].sum() / 3600),
            "target_hours": float(spent.loc[spent["kind"] == "target", "seconds"].sum() / 3600),
            "target_batch": int(batches.get("target", 1)), "replay_batch": int(batches.get("replay", 1)),
            "threads": ", ".join(str(int(t)) for t in sorted(spent["threads"].dropna().unique())),
            "replay_drafts": ", ".join(sorted(spent.loc[spent["kind"] == "replay", "draft"].unique()))}


RESEARCH_SIZE = {"prompts": 30, "length": 1000, "drafts": ("int4", "base"), "workers": 2}


def research_sized(spent: pd.DataFrame, folder) -> pd.DataFrame | None:
    """Predicted hours of the research-sized sweep (`RESEARCH_SIZE`) per part, batched and one unit at a time
    (`bench.gridrun.projection`), from the batching ratios stored in <folder>/grid_batching.csv; None when that
    file is not there."""
    from ..bench.grid import REPLAY_BATCH, TARGET_BATCH
    from ..bench.gridrun import projection

    path = Path(folder) / "grid_batching.csv"
    if not path.is_file():
        return None
    s = RESEARCH_SIZE
    return projection(spent, pd.read_csv(path), s["prompts"], s["length"], list(s["drafts"]), s["workers"],
                      TARGET_BATCH, REPLAY_BATCH)


def projection_sentence(plan: pd.DataFrame | None) -> str:
    """The research-sized projection in one sentence, or what measures the ratios it needs."""
    if plan is None:
        return ("How long a research-sized sweep would take is not predicted here: python "
                "benchmarks/grid_batching.py measures the batching ratios it needs.")
    s = RESEARCH_SIZE
    return (f"At the research's size with both drafts ({s['prompts']} prompts, {s['length']} new tokens, "
            f"{s['workers']} workers) the same sweep is predicted to take {plan['batched_h'].sum():.1f} h batched, "
            f"against {plan['one_at_a_time_h'].sum():.1f} h one unit at a time.")
