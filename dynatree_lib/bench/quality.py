"""Output quality: does a method reproduce target-only greedy decoding token for token, where does it first
diverge and why, and how likely is its text under the target (perplexity).

    table = compare_to_ar(pair, {"HumanEval/0": text}, [Linear(5), AdaptiveTree()], 32)

In float32 every greedy method must match AR exactly. In bfloat16 a method may leave AR's path: verifying a tree
multiplies matrices of another shape than a one-token AR step, so the sums inside run in another order and round
differently; where the target's two best tokens are within that rounding of each other, the argmax can flip. After
the first flip the two texts continue from different contexts. `margins` measures how close those calls were.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from ..core.loop import encode, generate
from ..methods.base import Autoregressive, label
from .harness import continuation_logits, first_divergence, perplexity


def ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of `dtype`'s numbers at the magnitude of each value (normal range): eps * 2^floor(log2 |x|)."""
    exponent = torch.floor(torch.log2(values.float().abs().clamp(min=torch.finfo(dtype).tiny)))
    return torch.finfo(dtype).eps * torch.exp2(exponent)


@torch.inference_mode()
def margins(model, prompt_ids: list[int], new_ids: list[int]) -> pd.DataFrame:
    """For each generated position i (predicting new_ids[i]): the target's best and second-best token and the logit
    gap between them, from one full-sequence forward (float32 softmax), plus `ulp`: the spacing of the model dtype's
    numbers at the top logit's magnitude (a gap of a few ulps is a near-tie that rounding can flip)."""
    if not new_ids:
        return pd.DataFrame(columns=["position", "token", "top1", "top2", "gap", "ulp", "gap_ulps", "argmax_agrees"])
    logits = continuation_logits(model, prompt_ids, new_ids)
    top = torch.topk(logits.float(), 2, dim=-1)
    spacing = ulp(top.values[:, 0], logits.dtype)
    gap = top.values[:, 0] - top.values[:, 1]
    return pd.DataFrame({
        "position": range(len(new_ids)), "token": list(new_ids), "top1": top.indices[:, 0].tolist(),
        "top2": top.indices[:, 1].tolist(), "gap": gap.tolist(), "ulp": spacing.tolist(),
        "gap_ulps": (gap / spacing).tolist(), "argmax_agrees": (top.indices[:, 0].cpu() == torch.tensor(new_ids)).tolist(),
    })


def compare_to_ar(pair, prompts: dict, methods, max_new_tokens: int) -> pd.DataFrame:
    """One row per (prompt, method), AR first: the generated tokens, whether they equal AR's (`match_ar`), the first
    diverging position (-1: none), AR's and the method's token there, the target's top-2 gap at that position in
    AR's context (`gap_at_divergence`, in logits and in ulps of the model dtype), perplexity under the target and
    tokens per round. EOS is ignored so every method writes exactly `max_new_tokens` tokens."""
    methods = [m for m in methods if not isinstance(m, Autoregressive)]
    dtype = str(pair.dtype).removeprefix("torch.")
    rows = []
    for pid, prompt in prompts.items():
        ids = encode(pair, prompt)
        ar = generate(pair, ids, Autoregressive(), max_new_tokens, stop_at_eos=False)
        gaps = margins(pair.target, ids, ar.token_ids)
        for m, gen in [(Autoregressive(), ar)] + [(m, generate(pair, ids, m, max_new_tokens, stop_at_eos=False))
                                                   for m in methods]:
            div = first_divergence(gen.token_ids, ar.token_ids)
            at = gaps.iloc[div] if 0 <= div < len(gaps) else None
            rows.append(dict(
                prompt_id=pid, method=label(m), dtype=dtype, new_tokens=len(gen.token_ids),
                match_ar=div == -1, first_divergence=div,
                ar_token=ar.token_ids[div] if at is not None else None,
                method_token=gen.token_ids[div] if 0 <= div < len(gen.token_ids) else None,
                gap_at_divergence=float(at["gap"]) if at is not None else math.nan,
                gap_ulps_at_divergence=float(at["gap_ulps"]) if at is not None else math.nan,
                min_gap_ulps=float(gaps["gap_ulps"].min()) if len(gaps) else math.nan,
                perplexity=perplexity(pair.target, ids, gen.token_ids),
                tokens_per_round=gen.stats["tokens_per_round"], token_ids=list(gen.token_ids),
            ))
    return pd.DataFrame(rows)
