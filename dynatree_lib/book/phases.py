"""Where the time of a few live generations went, round by round phase (draft, verify, commit): the timeline
chapter's table and the numbers its prose glues in (page.glue_numbers).

    runs = {label(m): generate(pair, prompt, m, n) for m in methods}    AR among them
    table = phase_table(runs)                 one row per run: rounds, milliseconds per phase, shares, speedup
    phase_numbers(table)                      the ranges the prose states over the speculative runs
    versus_numbers(table, method, chain)      one method's tokens, nodes and speed against a chain's
"""
from __future__ import annotations

import pandas as pd

from . import research
from .page import inline_code
from .tables import round_costs

PHASES = ("draft", "verify", "commit")


def phase_table(runs: dict) -> pd.DataFrame:
    """Per run of `runs` (label -> Generation, "AR" among them), indexed by method: rounds, tokens and nodes per
    round, the prefill, the first round's draft, milliseconds per round in each phase and its share of the round,
    verification over an AR step, wall time, tokens/s, speedup over AR and whether the tokens equal AR's."""
    if "AR" not in runs:
        raise ValueError(f"phase_table needs an AR run to compare with; runs: {sorted(runs)}")
    ar = runs["AR"]
    # One row per run, as the benchmark harness stores them (no forward hooks here: no draft_forward_s).
    per_run = pd.DataFrame([{"method": name, "draft_forward_s": float("nan"), **g.stats} for name, g in runs.items()])
    cost = round_costs(per_run).set_index("method")  # seconds per round, and over AR's step
    per_run = per_run.set_index("method")
    table = pd.DataFrame({
        "rounds": per_run["rounds"], "tokens/round": cost["tokens_per_round"], "nodes/round": cost["nodes_per_round"],
        "prefill ms": 1e3 * per_run["ttft_s"],
        "round-1 draft ms": {name: 1e3 * g.trace_frame()["draft_s"].iloc[0] for name, g in runs.items()},
        **{f"{phase} ms/round": 1e3 * cost[f"{phase}_s_per_round"] for phase in PHASES},
        **{f"{phase} %": 100 * cost[f"{phase}_s_per_round"] / cost["round_s"] for phase in PHASES},
        "verify / AR step": cost["verify_over_ar_step"], "break-even tokens/round": cost["round_over_ar_step"],
        "wall s": per_run["wall_s"], "tok/s": per_run["tokens_per_s"],
        "speedup": ar.stats["wall_s"] / per_run["wall_s"],
        "match_ar": {name: g.token_ids == ar.token_ids for name, g in runs.items()},
    }, index=list(runs))
    table.attrs["ar_step_ms"] = 1e3 * float(cost.loc["AR", "ar_step_s"])
    table.index.name = "method"
    return table


def phase_numbers(table: pd.DataFrame) -> dict:
    """From `phase_table`: AR's step, and over the speculative runs the range of the draft's and the verification's
    share of round time, of a verification's cost in AR steps and of the tokens committed per round."""
    spec = table.drop(index="AR")
    if spec.empty:
        raise ValueError("phase_numbers needs a speculative run beside AR")
    ranges = {"draft": "draft %", "verify": "verify %", "verify_step": "verify / AR step",
              "tokens": "tokens/round"}
    return {"ar_step_ms": table.attrs["ar_step_ms"],
            **{f"{key}_{end}": float(getattr(spec[column], end)()) for key, column in ranges.items()
               for end in ("min", "max")}}


def versus_numbers(table: pd.DataFrame, method: str, chain: str) -> dict:
    """`method`'s tokens and nodes per round beside the chain `chain`'s, and its speed as a multiple of the chain's
    (both runs of `phase_table`)."""
    missing = [m for m in (method, chain) if m not in table.index]
    if missing:
        raise ValueError(f"no run of {missing}; runs: {list(table.index)}")
    ours, theirs = table.loc[method], table.loc[chain]
    return {"method": inline_code(method), "chain": inline_code(chain), "tokens": float(ours["tokens/round"]),
            "nodes": float(ours["nodes/round"]), "chain_tokens": float(theirs["tokens/round"]),
            "chain_nodes": float(theirs["nodes/round"]), "speed": float(ours["speedup"] / theirs["speedup"])}


def research_beside(table: pd.DataFrame) -> pd.DataFrame:
    """Tokens per round and speedup of `phase_table`'s runs beside the research's for the same method family
    (research.ADAPTIVE_1000: its GPU, 1000 tokens); a family the research did not run gets '-' and NaN."""
    ref = research.ADAPTIVE_1000.set_index("family")
    family = [name.split("(")[0] for name in table.index]
    theirs = ref.reindex(family)
    return pd.DataFrame({
        "tokens/round here": table["tokens/round"],
        "research family": theirs["method"].fillna("-").to_numpy(),
        "tokens/round research": theirs["tokens_per_round"].to_numpy(),
        "speedup here": table["speedup"], "speedup research": theirs["speedup"].to_numpy(),
    }, index=table.index)
