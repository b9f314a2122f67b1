"""How well the grid's predictions hold: the timed validation rows (`grid_validation.csv`) beside the predictions of
the same (policy, prompt, length), the calibration's context and forward scales, and plain decoding's steps, as the
parameter-search chapter shows them (book.grid holds the grid itself).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from .plots import PHASE_COLORS, TEMPLATE, _require


def prediction_scatter(validation: pd.DataFrame, title: str | None = "Predicted against timed speedup"):
    """One point per timed (policy, prompt, length), predicted speedup over the timed one, with the y = x line."""
    _require(validation, ["method", "prompt_id", "speedup", "predicted_speedup", "error_speedup"])
    lo = min(validation["speedup"].min(), validation["predicted_speedup"].min()) * 0.95
    hi = max(validation["speedup"].max(), validation["predicted_speedup"].max()) * 1.05
    fig = go.Figure()
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dot", color="#6b6b6b"), name="y = x")
    fig.add_scatter(x=validation["speedup"], y=validation["predicted_speedup"], mode="markers", name="pairs",
                    marker=dict(size=9, color="#2e8b57"),
                    customdata=validation[["method", "prompt_id", "error_speedup"]],
                    hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>timed %{x:.3f}, predicted %{y:.3f}"
                                  "<br>error %{customdata[2]:+.1%}<extra></extra>")
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title="timed speedup over AR",
                      yaxis_title="predicted speedup over AR", showlegend=False)
    return fig


def ar_spread(timed: pd.DataFrame) -> pd.Series:
    """Per prompt timed more than once: how far its AR walls lie apart (slowest / fastest - 1). The noise floor of
    any prediction checked against single timed runs."""
    ar = timed[timed["method"] == "AR"]
    walls = ar.groupby(["prompt_id", "max_new_tokens"])["wall_s"]
    spread = walls.max() / walls.min() - 1
    return spread[walls.count() > 1]


def ar_steps(timed: pd.DataFrame, predicted: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per timed AR run: the prompt, its length, its time to first token (the prefill) and the seconds of one
    decoding step after it ((wall - time to first token) / (new tokens - 1)), what a prediction's AR wall is built
    from; with `predicted` (grid rows), the step and prefill the prediction priced for the same prompt and length."""
    _require(timed, ["method", "prompt_id", "prompt_tokens", "wall_s", "ttft_s", "new_tokens"])
    ar = timed[(timed["method"] == "AR") & (timed["new_tokens"] > 1)]
    steps = (ar["wall_s"] - ar["ttft_s"]) / (ar["new_tokens"] - 1)
    out = ar[["prompt_id", "prompt_tokens", "new_tokens", "ttft_s"]].assign(step_s=steps.to_numpy())
    out = out.reset_index(drop=True)
    if predicted is not None:
        p = predicted.assign(predicted_step_s=(predicted["predicted_ar_wall_s"] - predicted["predicted_prefill_s"])
                             / (predicted["max_new_tokens"] - 1))
        p = p.groupby(["prompt_id", "max_new_tokens"])[["predicted_step_s", "predicted_prefill_s"]].median()
        p = p.rename_axis(["prompt_id", "new_tokens"]).reset_index()
        out = out.merge(p, on=["prompt_id", "new_tokens"], how="left")
    return out


PARTS = {"prefill": ("ttft_s", "predicted_prefill_s"), "draft forwards": ("draft_forward_s", "predicted_draft_s"),
         "verify forwards": ("verify_forward_s", "predicted_verify_s"),
         "outside forwards": ("outside_s", "predicted_overhead_s")}


def part_errors(timed: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """Where a policy's predicted wall time is off, per draft variant and part of the run: the timed seconds (each
    pair's median over its repeats, summed over pairs) of the prefill (time to first token), the draft's forwards,
    the target's forwards after the prefill and the time outside forwards, beside what `predicted` (grid rows at
    the same method, prompt and length) priced for each, and predicted / timed - 1."""
    _require(timed, ["method", "prompt_id", "max_new_tokens", "wall_s", "ttft_s", "draft_forward_s",
                     "target_forward_s"])
    pol = timed[timed["method"] != "AR"]
    pol = pol.assign(verify_forward_s=pol["target_forward_s"] - pol["ttft_s"],
                     outside_s=pol["wall_s"] - pol["target_forward_s"] - pol["draft_forward_s"])
    keys = ["method", "prompt_id", "max_new_tokens"]
    runs = pol.groupby(keys)[[t for t, _ in PARTS.values()]].median().reset_index()
    both = runs.merge(predicted[keys + [p for _, p in PARTS.values()]], on=keys)
    both["draft"] = both["method"].map(draft_of)
    rows = []
    for draft, part in both.groupby("draft"):
        for name, (t, p) in PARTS.items():
            rows.append({"draft": draft, "part": name, "pairs": len(part), "timed_s": part[t].sum(),
                         "predicted_s": part[p].sum(), "error": part[p].sum() / part[t].sum() - 1})
    return pd.DataFrame(rows)


def draft_of(method: str) -> str:
    """The grid's draft variant (`bench.grid.DRAFT_BITS`: "base", "int8", "int4") a stored method runs."""
    from ..bench.grid import DRAFT_BITS
    from ..bench.specs import stored_method

    bits = getattr(stored_method(None, None, str(method)), "draft_bits", None)
    return {b: name for name, b in DRAFT_BITS.items()}[bits]


def error_table(validation: pd.DataFrame) -> pd.DataFrame:
    """The validation's errors by kind of text and draft: pairs, median |speedup error|, and the median signed
    errors of the policy's wall and of AR's (predicted / timed - 1)."""
    from .tables import text_kind

    _require(validation, ["method", "prompt_id", "abs_error_speedup", "error_wall", "error_ar_wall"])
    v = validation.assign(text=validation["prompt_id"].map(text_kind), draft=validation["method"].map(draft_of))
    return (v.groupby(["text", "draft"])
            .agg(pairs=("abs_error_speedup", "size"), median_abs_error_speedup=("abs_error_speedup", "median"),
                 median_error_wall=("error_wall", "median"), median_error_ar_wall=("error_ar_wall", "median"))
            .reset_index())


def repeat_errors(predicted: pd.DataFrame, timed: pd.DataFrame) -> pd.DataFrame:
    """Median |speedup error| with every pair checked against one timed repeat alone (each repeat in turn) and
    against the median of its repeats: how much of a single check's error is the timing's own noise."""
    from ..planning.predict import validate

    _require(timed, ["repeat"])
    rows = [{"timed": f"repeat {r} alone", "pairs": len(v), "median_abs_error_speedup": v["abs_error_speedup"].median()}
            for r, part in timed.groupby("repeat") for v in [validate(predicted, part)]]
    v = validate(predicted, timed)
    rows.append({"timed": "median of the repeats", "pairs": len(v),
                 "median_abs_error_speedup": v["abs_error_speedup"].median()})
    return pd.DataFrame(rows)


def _calibrations(root):
    """(draft, Calibration) for each calibration stored under `root`."""
    from ..planning.predict import Calibration

    for path in sorted((Path(root) / "calibration").glob("*.json")):
        calib = Calibration.load(path)
        yield calib.info.get("draft", path.stem), calib


def context_curves(root) -> pd.DataFrame:
    """The context curves of the calibrations stored under `root` (planning.calibrate.context_scale), tidy: draft
    (whose calibration), model ("target" or "draft"), context (cached tokens) and scale (a forward's seconds over
    the same forward's on the first context)."""
    rows = [{"draft": draft, "model": model, "context": c, "scale": x}
            for draft, calib in _calibrations(root) for model, curve in calib.context.items()
            for c, x in zip(curve["contexts"], curve["scale"])]
    return pd.DataFrame(rows, columns=["draft", "model", "context", "scale"])


def forward_scales(root) -> pd.DataFrame:
    """Per stored calibration, how much slower forwards run inside real runs than on the cost curves: the target's
    one-token forward inside an AR run (`measure_overheads`) beside the same forward on the curve and their ratio
    (`forward_scale`, which prices AR's steps), and the tree runs' target and draft forwards over their curve
    prices (`run_scales`, which price the prefill and a policy's forwards; equal to forward_scale where the
    calibration predates them)."""
    rows = [{"draft": draft, "ar_forward_s": calib.overheads.info.get("ar_forward_s"),
             "curve_forward_s": calib.costs.verify(1), "forward_scale": calib.forward_scale,
             "target_run_scale": calib.run_scales["target"], "draft_run_scale": calib.run_scales["draft"]}
            for draft, calib in _calibrations(root)]
    return pd.DataFrame(rows, columns=["draft", "ar_forward_s", "curve_forward_s", "forward_scale",
                                       "target_run_scale", "draft_run_scale"])


# ---------------------------------------------------------------------------------------------------------------------
# What the parameter-search chapter glues into its prose


def validation_numbers(check: pd.DataFrame, timed: pd.DataFrame) -> dict:
    """The timed check of the prediction in numbers: `planning.predict.error_summary` of `check`, the repeats per
    pair, how far one prompt's AR walls lie apart between repeats (`ar_spread`: median, highest, prompts; nan
    when no prompt was timed twice) and the commits the timed runs carry."""
    from ..bench.storage import distinct
    from ..planning.predict import error_summary

    spread = ar_spread(timed)
    out = error_summary(check)
    out.update({"repeats": int(timed["repeat"].max()) + 1 if "repeat" in timed else 1,
                "spread_median": float(spread.median()) if len(spread) else float("nan"),
                "spread_max": float(spread.max()) if len(spread) else float("nan"),
                "spread_prompts": int(len(spread)), "timed_commits": ", ".join(distinct(timed, "git_commit", 7))})
    return out


def ar_step_table(timed: pd.DataFrame, predicted: pd.DataFrame | None = None) -> pd.DataFrame:
    """`ar_steps` per kind of text: median prompt tokens, the median, fastest and slowest timed step, how many runs,
    the median time to first token and, with `predicted`, the medians of the predicted step and prefill."""
    from .tables import text_kind

    steps = ar_steps(timed, predicted)
    by = steps["prompt_id"].map(text_kind).rename("text")
    g = steps.groupby(by)
    out = g.agg(prompt_tokens=("prompt_tokens", "median"), step_s=("step_s", "median"),
                fastest=("step_s", "min"), slowest=("step_s", "max"), runs=("step_s", "size"),
                ttft_s=("ttft_s", "median"))
    for column in ("predicted_step_s", "predicted_prefill_s"):
        if column in steps:
            out[column] = g[column].median()
    return out.reset_index()


def context_figure(curves: pd.DataFrame, title: str | None = "One forward's cost against the cache it reads"):
    """`context_curves` as lines: a forward's cost over its cost on the shortest cache, against cached tokens, one
    colour per model and one dash per calibration."""
    _require(curves, ["draft", "model", "context", "scale"])
    dashes = dict(zip(sorted(curves["draft"].unique()), ["solid", "dash", "dot", "dashdot"] * 4))
    fig = go.Figure()
    for (model, draft), part in curves.groupby(["model", "draft"]):
        fig.add_scatter(x=part["context"], y=part["scale"], name=f"{model} ({draft} calibration)",
                        mode="lines+markers", line=dict(dash=dashes[draft],
                                                        color=PHASE_COLORS["verify" if model == "target" else "draft"]))
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title="cached tokens",
                      yaxis_title="cost / cost on the shortest")
    return fig
