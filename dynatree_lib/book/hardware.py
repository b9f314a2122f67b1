"""What the hardware chapter shows: a machine's two cost curves (`planning.calibrate.Costs`) as a table and a figure,
what tree shapes cost per round on them, which shape the cost model (`planning.planner`) picks for an acceptance
rate, the research's tree priced on them, the stored checks beside them (the planner against the best other
policy, GPU curves, the trimmed vocabulary, the forward profile), and the numbers the chapter's prose glues.

A finding that rests on a stored file the chapter may not find is returned as a whole sentence (`*_finding`), which
says what measures it when the file is missing; numbers that every run has are returned in dicts to glue one by one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..planning import planner
from ..planning.calibrate import Costs
from .plots import PHASE_COLORS, TEMPLATE, _require

# Shapes whose cost per round the chapter tabulates, as (depth, branch, node budget): a plain step, two chains, the
# research's fixed trees and smaller ones.
SHAPES = ((1, 1, 1), (4, 1, 4), (6, 1, 6), (5, 2, 128), (4, 2, 16), (8, 3, 128), (3, 3, 64))
RESEARCH_BUDGET = 128  # the research's node budget N


def stored(name: str, preset: str) -> pd.DataFrame:
    """data/results/<name>.csv as `bench.read_results` reads it (empty when the file is not there), with the
    attributes `notes.data_note` reads (experiment, preset: what wrote it, source)."""
    from ..bench.storage import read_results, results_path
    from ..models.provenance import repo_relative

    path = results_path(name)
    rows = read_results(path)
    rows.attrs.update(experiment=name, preset=preset, source=repo_relative(path))
    return rows


def _with_draft(costs: Costs) -> Costs:
    if costs.draft_s is None:
        raise ValueError("these costs were measured without a draft: pricing a tree needs the draft's curve")
    return costs


def _curve_figure(title: str | None, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title="tokens in the forward (n)", **layout)
    return fig


def cost_table(costs: Costs) -> pd.DataFrame:
    """The two cost curves, one row per measured size n: milliseconds of one target forward (verification) and of
    one draft forward (a level), the draft's over the target's, and the verification over one plain step."""
    frame = _with_draft(costs).frame()
    return pd.DataFrame({"nodes": frame["nodes"], "verify ms": 1e3 * frame["verify_s"],
                         "draft ms": 1e3 * frame["draft_s"], "draft / verify": frame["draft_over_verify"],
                         "verify / AR step": frame["verify_s"] / costs.verify(1)})


def cost_figure(costs: Costs, title: str | None = None) -> go.Figure:
    """Milliseconds of one target forward and one draft forward against the tokens in the forward, with the raw
    medians the calibration kept before making the curves non-decreasing (`info`'s raw_verify_s, raw_draft_s) as
    open circles."""
    table = cost_table(costs)
    fig = _curve_figure(title, yaxis_title="ms per forward")
    for column, name, phase in (("verify ms", "target (verify)", "verify"), ("draft ms", "draft (one level)", "draft")):
        fig.add_scatter(x=table["nodes"], y=table[column], name=name, mode="lines+markers",
                        line_color=PHASE_COLORS[phase])
        raw = costs.info.get(f"raw_{phase}_s")
        if raw:
            fig.add_scatter(x=list(costs.nodes), y=[1e3 * v for v in raw], name=f"{name.split()[0]}, raw medians",
                            mode="markers", marker=dict(symbol="circle-open", color=PHASE_COLORS[phase]))
    return fig


def curve_numbers(costs: Costs, target_params: int, draft_params: int, research_params: dict) -> dict:
    """The cost curves in a few numbers: one plain step in ms, the largest size measured and its verification over
    one step, the draft's forward over the target's at n = 1 and at the largest size, and the draft's parameters
    beside the target's (billions, share) and beside the research's pair (`research_params`: target, draft)."""
    costs = _with_draft(costs)
    n, step = costs.nodes[-1], costs.verify(1)
    return {"ar_ms": 1e3 * step, "n_max": int(n), "verify_growth": costs.verify(n) / step,
            "draft_step": costs.draft(1) / step, "draft_over_verify_max": costs.draft(n) / costs.verify(n),
            "draft_share": draft_params / target_params, "draft_b": draft_params / 1e9, "target_b": target_params / 1e9,
            "research_share": research_params["draft"] / research_params["target"]}


def round_seconds(costs: Costs, widths) -> tuple[float, float]:
    """(draft, verify) seconds of one round of a tree with `widths` nodes per level (`planner.draft_seconds`, then
    one target forward over the nodes and the root)."""
    return planner.draft_seconds(costs, widths), costs.verify(1 + sum(widths))


def shape_costs(costs: Costs, shapes=SHAPES) -> pd.DataFrame:
    """What each (depth, branch, node budget) in `shapes` costs per round: its nodes per level (`fixed_widths`, no
    pruning), draft and verification milliseconds, the round in plain steps (the break-even: the tokens a round
    must commit to match plain decoding) and whether its size lies past the largest one measured."""
    costs = _with_draft(costs)
    rows = []
    for depth, branch, budget in shapes:
        widths = planner.fixed_widths(depth, branch, budget)
        draft_s, verify_s = round_seconds(costs, widths)
        rows.append({"shape": f"D={depth}, B={branch}, N={budget}", "widths": widths, "nodes": sum(widths),
                     "draft ms": 1e3 * draft_s, "verify ms": 1e3 * verify_s,
                     "round / AR step": (draft_s + verify_s) / costs.verify(1),
                     "extrapolated": 1 + sum(widths) > costs.nodes[-1]})
    return pd.DataFrame(rows)


def plan_sizes(costs: Costs, accept_grid, *, max_depth: int = 8, max_branch: int = 3,
               max_nodes: int = 64) -> pd.DataFrame:
    """For each acceptance p (`planner.rank_accept_prior`) and tree size: the best expected speedup over plain
    decoding of any candidate shape of that size (`planner.Planner`'s shapes and calibrated seconds)."""
    chooser = planner.Planner(_with_draft(costs), max_depth, max_branch, max_nodes)
    sizes = np.array([s.nodes for s in chooser.shapes])
    seconds = chooser.draft_cost + chooser.verify_cost
    frames = []
    for p in accept_grid:
        r = planner.rank_accept_prior(p, max_depth, max_branch)
        expected = np.array([planner.expected_tokens(s.widths, r) for s in chooser.shapes])
        best = pd.Series(expected / seconds * costs.verify(1)).groupby(sizes).max()
        frames.append(pd.DataFrame({"p": p, "nodes": best.index, "speedup": best.to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def plan_sizes_figure(sizes: pd.DataFrame, title: str | None = None) -> go.Figure:
    """`plan_sizes` as one line per acceptance p, with plain decoding's speed (1) dotted."""
    _require(sizes, ["p", "nodes", "speedup"])
    fig = _curve_figure(title, yaxis_title="expected speedup over AR")
    fig.update_layout(xaxis_title="draft nodes in the tree")
    for p, part in sizes.groupby("p", sort=False):
        fig.add_scatter(x=part["nodes"], y=part["speedup"], name=f"p = {p:g}", mode="lines+markers", marker_size=5)
    fig.add_hline(y=1.0, line_dash="dot", line_color="#6b6b6b", annotation_text="AR")
    return fig


def shape_name(plan) -> str:
    """A planned shape (a row of `planner.plan_table`) as the page writes it; depth 0 is a plain step."""
    return f"D={plan['depth']}, B={plan['branch']}, N={plan['nodes']}" if plan["depth"] else "none (AR)"


def plan_numbers(plans: pd.DataFrame) -> dict:
    """The highest acceptance of a `planner.plan_table` and what the planner picks there: its shape and expected
    speedup over plain decoding."""
    _require(plans, ["p", "depth", "branch", "nodes", "expected speedup over AR"])
    top = max(plans.to_dict("records"), key=lambda plan: plan["p"])  # records keep each column's type
    return {"p_top": float(top["p"]), "shape_top": shape_name(top),
            "speedup_top": float(top["expected speedup over AR"])}


def draft_bits_table(costs: Costs, quantized: Costs, dtype: str, bits: int) -> pd.DataFrame:
    """Milliseconds of one draft level with the draft's own weights (`costs`) and its int<bits> copy (`quantized`),
    at the sizes of `costs`, and the copy's level over one plain step."""
    costs, quantized = _with_draft(costs), _with_draft(quantized)
    q = np.array([quantized.draft(n) for n in costs.nodes])
    return pd.DataFrame({"nodes": costs.nodes, f"draft ms ({dtype})": [1e3 * costs.draft(n) for n in costs.nodes],
                         f"draft ms (int{bits})": 1e3 * q, f"int{bits} draft / AR step": q / costs.verify(1)})


def draft_bits_figure(costs: Costs, quantized: Costs, dtype: str, bits: int, title: str | None = None) -> go.Figure:
    """A draft level's milliseconds with the draft's own weights and with its int<bits> copy, beside the target's
    verification."""
    table, verify = draft_bits_table(costs, quantized, dtype, bits), cost_table(costs)["verify ms"]
    fig = _curve_figure(title, yaxis_title="ms per forward")
    for column, name in zip(table.columns[1:3], (f"draft, {dtype}", f"draft, int{bits}")):
        fig.add_scatter(x=table["nodes"], y=table[column], name=name, mode="lines+markers")
    fig.add_scatter(x=table["nodes"], y=verify, name="target (verify)", mode="lines+markers",
                    line_color=PHASE_COLORS["verify"])
    return fig


def draft_bits_finding(costs: Costs, quantized: Costs | None, plans: pd.DataFrame, quantized_plans, dtype: str,
                       bits: int | None) -> str:
    """The quantized draft against the draft's own weights in one sentence: a level's cost at n = 1 in plain steps
    and the best expected speedup at the highest acceptance; or that no quantized draft was calibrated."""
    if quantized is None or bits is None:
        return "No quantized draft was calibrated in this run (draft_bits is None, or the pair has no draft)."
    step = costs.verify(1)
    mine, theirs = plan_numbers(quantized_plans), plan_numbers(plans)
    return (f"At n = 1 the int{bits} draft's forward costs {quantized.draft(1) / step:.2f} of a plain step against "
            f"{costs.draft(1) / step:.2f} for the {dtype} draft; at p = {mine['p_top']:g} the best expected speedup "
            f"is {mine['speedup_top']:.2f}x ({mine['shape_top']}) against {theirs['speedup_top']:.2f}x.")


def research_tree(costs: Costs, plans: pd.DataFrame, best: dict, max_depth: int = 8,
                  max_branch: int = 3) -> pd.DataFrame:
    """The research's best tree (`best`: depth, branch; budget `RESEARCH_BUDGET`, unpruned) priced on `costs`
    beside the planner's best tree (`plans`, a `planner.plan_table`), for each acceptance p of `plans`: the
    research tree's expected tokens per round and expected speedup over plain decoding, and the best shape's."""
    widths = planner.fixed_widths(best["depth"], best["branch"], RESEARCH_BUDGET)
    seconds = sum(round_seconds(_with_draft(costs), widths))
    rows = []
    for plan in plans.to_dict("records"):
        r = planner.rank_accept_prior(plan["p"], max(max_depth, best["depth"]), max(max_branch, best["branch"]))
        expected = planner.expected_tokens(widths, r)
        rows.append({"p": plan["p"], "research tree E[tokens/round]": expected,
                     "research tree expected speedup here": expected / seconds * costs.verify(1),
                     "best tree here": shape_name(plan),
                     "best expected speedup here": plan["expected speedup over AR"]})
    return pd.DataFrame(rows)


def research_numbers(costs: Costs, best: dict) -> dict:
    """The research's best tree on this machine: its nodes and levels when the budget fills unpruned, its nodes per
    level, and its round in plain steps; plus the research's own shape, length and speedup for the prose."""
    widths = planner.fixed_widths(best["depth"], best["branch"], RESEARCH_BUDGET)
    return {"r_depth": int(best["depth"]), "r_branch": int(best["branch"]), "r_threshold": float(best["threshold"]),
            "r_budget": RESEARCH_BUDGET, "r_speedup": float(best["speedup"]), "r_tokens": int(best["max_new_tokens"]),
            "r_nodes": int(sum(widths)), "r_levels": len(widths), "r_widths": ", ".join(map(str, widths)),
            "r_round_steps": sum(round_seconds(_with_draft(costs), widths)) / costs.verify(1)}


def gpu_curves(paths, costs: Costs, device: str, accept_grid, *, max_depth: int = 8, max_branch: int = 3,
               max_nodes: int = 64) -> tuple[go.Figure, pd.DataFrame]:
    """Stored GPU cost curves (`scripts/gpu_check.sh`'s gpu_costs_<pair>_<dtype>*.csv: Costs.frame() columns plus
    provenance) beside this machine's: a figure of each verification over its plain step, and the shapes the cost
    model picks on each GPU curve for the acceptances of `accept_grid`."""
    fig = _curve_figure("Verify cost relative to one AR step, CPU and GPU", yaxis_title="t_verify(n) / t_verify(1)")
    here = cost_table(costs)
    fig.add_scatter(x=here["nodes"], y=here["verify / AR step"], name=f"this machine ({device})",
                    mode="lines+markers")
    plans = []
    for path in paths:
        g = pd.read_csv(path)
        _require(g, ["nodes", "verify_s", "draft_s"])
        name = path.stem.removeprefix("gpu_costs_")
        if "device_name" in g.columns:
            name += f" ({g['device_name'].iloc[0]})"
        fig.add_scatter(x=g["nodes"], y=g["verify_s"] / g["verify_s"].iloc[0], name=name, mode="lines+markers")
        curve = Costs(tuple(int(n) for n in g["nodes"]), tuple(g["verify_s"]), tuple(g["draft_s"]))
        plan = planner.plan_table(curve, accept_grid, max_depth=max_depth, max_branch=max_branch, max_nodes=max_nodes)
        plans.append(plan.assign(costs=name))
    columns = ["costs", "p", "depth", "branch", "nodes", "expected speedup over AR"]
    return fig, pd.concat(plans, ignore_index=True)[columns]


def gpu_finding(paths) -> str:
    """Whether GPU cost curves are stored, in one sentence."""
    if not paths:
        return ("No GPU was available when these results were made, so no GPU cost curves are stored and only this "
                "machine's curves are shown; bash scripts/gpu_check.sh on a CUDA machine measures them.")
    names = ", ".join(p.stem.removeprefix("gpu_costs_") for p in paths)
    return f"GPU cost curves are stored for {names}."


def planner_table(rows: pd.DataFrame, planners) -> pd.DataFrame | None:
    """Per prompt of the stored planner benchmark: each planner's (stored labels in `planners`) speedup over the
    best other policy's on that prompt (`tables.against_best_policy`; AR and transformers' loops are not
    candidates, nor the planners), and which policy that was; None when no planner is stored."""
    from .tables import against_best_policy

    stored = [m for m in planners if m in set(rows.get("method", []))]
    if not stored:
        return None
    others = [m for m in rows["method"].unique()
              if m != "AR" and m not in planners and not m.startswith(("HF", "HardwareAware", "PlannedTree"))]
    checks = {m: against_best_policy(rows, m, others).set_index("prompt_id") for m in stored}
    table = pd.DataFrame({m: c["ratio"] for m, c in checks.items()})
    return table.assign(best_other_policy=checks[stored[0]]["best_policy"]).reset_index()


def planner_finding(rows: pd.DataFrame, planners, twin: tuple[str, str] | None = None) -> str:
    """The planner benchmark in sentences: per planner, the lowest, highest and median ratio to the best other
    policy and its worst prompt; and, for `twin` (two stored labels that may commit in the same rounds), how far
    their walls lie apart where they did the same work: the noise of one timed run. Or what measures it."""
    table = planner_table(rows, planners)
    if table is None:
        return ("No planner benchmark is stored: python benchmarks/goal.py --experiment planner measures it (the full "
                "command is in data/results/README.md).")
    parts = []
    for m in (c for c in table.columns if c not in ("prompt_id", "best_other_policy")):
        worst = table.loc[table[m].idxmin()]
        parts.append(f"{m} runs {table[m].min():.2f}x to {table[m].max():.2f}x as fast as the best other policy per "
                     f"prompt (median {table[m].median():.2f}x; worst on {worst['prompt_id']}, where "
                     f"{worst['best_other_policy']} was best).")
    if twin is not None:
        a, b = (rows[rows["method"] == m].set_index("prompt_id") for m in twin)
        if len(a) and len(b):
            same = a.index.intersection(b.index)
            same = same[((a.loc[same, "rounds"] == b.loc[same, "rounds"])
                         & (a.loc[same, "tokens_per_round"] == b.loc[same, "tokens_per_round"])).to_numpy()]
            if len(same):
                gap = (a.loc[same, "wall_s"] / b.loc[same, "wall_s"] - 1).abs()
                parts.append(f"On {len(same)} of {len(a)} prompts {twin[0]} and {twin[1]} committed in the same "
                             f"rounds (the same work), yet their walls differ by up to {gap.max():.1%}: ratios that "
                             "close to 1 are within the noise of one timed run.")
    return " ".join(parts)


def vocab_finding(table: pd.DataFrame | None) -> str:
    """The smallest trimmed vocabulary of a `book.vocab_costs.vocab_table` in one sentence: a level's cost against
    the full vocabulary's, target tokens outside the kept K and the change of the draft's top-1 agreement; or what
    measures it."""
    if table is None:
        return "No trimmed-vocabulary costs are stored: python benchmarks/vocab_costs.py measures them."
    small = table.iloc[-1]
    level = next(c for c in table.columns if c.startswith("level_vs_full_"))
    return (f"With K = {small['K']} a draft level ({level.removeprefix('level_vs_full_')} node) costs "
            f"{small[level]:.2f} of the full vocabulary's; {small['target_outside_K']:.2%} of the target's tokens "
            f"fall outside the kept K, and the draft's top-1 agreement moves by {100 * small['agreement_change']:+.1f} "
            "points.")


def profile_finding(table: pd.DataFrame | None) -> str:
    """A `bench.profile.profile_table` in one sentence: the share of an int4 draft level outside the weight matmuls
    (lowest to highest over tree sizes) and of the target's verification (median); or what measures it."""
    if table is None:
        return "No forward profile is stored: python benchmarks/forward_profile.py measures it."
    models = table.index.get_level_values("model")
    target = table.xs("target", level="model")["outside matmuls %"].median() if "target" in models else float("nan")
    if "draft int4" not in models:
        return f"The target's verification spends {target:.0f}% of its time outside the weight matmuls (median)."
    int4 = table.xs("draft int4", level="model")
    return (f"An int4 draft level spends {int4['outside matmuls %'].min():.0f}-{int4['outside matmuls %'].max():.0f}% "
            f"of its time outside the weight matmuls ({', '.join(str(n) for n in int4.index)} nodes), the target's "
            f"verification {target:.0f}% (median).")


def calibration_note(costs: Costs, dtype: str, device: str, prefix_len: int, repeats: int) -> str:
    """Markdown: where and how the cost curves were measured (date, CPU, GPU, threads, sizes, prefix, passes, the
    load average before and after), the note printed under the calibration."""
    info = costs.info
    return (f"**Calibration:** {info.get('date_utc', '?')}, {info.get('cpu', '?')}, GPU {info.get('gpu') or 'none'}, "
            f"{info.get('torch_threads', '?')} torch threads, {dtype} on {device}; sizes {list(costs.nodes)}, prefix "
            f"{prefix_len}, median of {repeats} pass(es). Load average before / after: "
            f"{info.get('loadavg_before', '?')} / {info.get('loadavg_after', '?')}. Raw medians are kept in the "
            "calibration; the curves are made non-decreasing in n (a stall can make a size look slower, never faster).")


def no_bf16_table(rows: pd.DataFrame, length: int = 128) -> pd.DataFrame:
    """The speed table's layout (verdict.summary, every method stored) for rows measured on a CPU without bf16
    arithmetic (data/results/speed_avx2.csv), fastest first, without the configuration column."""
    from .verdict import summary

    return summary(rows, length, methods="all").drop(columns=["Configuration", "Prompts"])


def no_bf16_numbers(rows: pd.DataFrame, length: int = 128) -> dict:
    """What the prose says of those rows: the CPU and prompts, the speedups over plain decoding of DynaTree with the
    int4 draft (median, worst prompt), with the shipped draft, and of transformers' assisted generation with the int4
    draft, and the fastest method."""
    from ..methods import DynaTree, HFAssisted, label
    from .tables import prompts_described
    from .verdict import summary

    table = summary(rows, length, methods="all").set_index("Configuration")
    # the shipped draft ran unstaged there (staging, its default today, was not measured on that CPU)
    wanted = [label(m) for m in (DynaTree(draft_bits=4), HFAssisted(draft_bits=4), DynaTree(staged=False))]
    missing = [m for m in wanted if m not in table.index]
    if missing:
        raise ValueError(f"no rows of {missing} at {length} new tokens")
    lead, peer, shipped = (table.loc[m] for m in wanted)
    plain = rows[(rows["method"] == "AR") & (rows["max_new_tokens"] == length)]
    return {"cpu": ", ".join(sorted(set(rows["cpu"].dropna()))), "length": length,
            "prompts": prompts_described(rows[rows["max_new_tokens"] == length]),
            "lead": float(lead["Speedup"]), "lead_worst": float(lead["Worst prompt"]),
            "peer": float(peer["Speedup"]), "shipped": float(shipped["Speedup"]),
            "fastest": str(table["Method"].iloc[0]), "fastest_speedup": float(table["Speedup"].iloc[0]),
            "prefill_share": float((plain["ttft_s"] / plain["wall_s"]).median())}


NO_BF16_CAPTION = ("The speed table's methods on a CPU without bf16 arithmetic (AVX2 only; "
                   "data/results/speed_avx2.csv): speedup over plain decoding (median and worst prompt), over "
                   "transformers' assisted generation given the same draft, tokens per target forward, and runs "
                   "identical to plain decoding, fastest first.")
