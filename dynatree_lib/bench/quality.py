"""Output quality: does a method reproduce target-only greedy decoding token for token, where does it first
diverge and why, and how likely is its text under the target (perplexity).

    table = compare_to_ar(pair, {"HumanEval/0": text}, [Linear(5), AdaptiveTree()], 32)

In float32 every greedy method must match AR exactly. In bfloat16 a method may leave AR's path: verifying a tree
multiplies matrices of another shape than a one-token AR step, so the sums inside run in another order and round
differently; where the target's two best tokens are within that rounding of each other, the argmax can flip. After
the first flip the two texts continue from different contexts. `margins` measures how close those calls were.

    flips = flip_table(pair, {"HumanEval/10": text}, [DynaTree(draft_bits=4)], 128)
    store_flips(pair, prompts, methods, [128])      # the same into data/results/flips.csv, resumable

`flip_table` says, per run that left AR's path, how near a tie the flip was (the target's top-2 gap on the shared
prefix, in logits and in spacings of the dtype) and whether the text after it is worse: perplexity under the target
and the share of repeated 4-grams, beside AR's on the same prompt.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from ..core.loop import encode, generate
from ..methods.base import Autoregressive, label
from ..methods.names import identity
from ..models.provenance import pair_info, provenance, row_provenance, utc_now
from .harness import _lengths, as_prompts, continuation_logits, first_divergence, perplexity, with_ar
from .storage import _append, _keys, _write_meta, config_key, read_meta, read_results, results_path, stored_keys

# The n-gram length of the repetition measure (flip_table's repeat4_* columns).
REPEAT_N = 4
FLIP_COLUMNS = ("prompt_id", "method", "max_new_tokens", "first_divergence", "gap_logits", "gap_spacings", "ar_token",
                "method_token", "repeat4_ar", "repeat4_method", "perplexity_ar", "perplexity_method")


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


def _against_ar(pair, prompts: dict, methods, max_new_tokens: int):
    """Per prompt: (id, prompt ids, AR's generation, [(method, its generation)] for every other method), EOS ignored
    so every generation has exactly `max_new_tokens` tokens."""
    others = with_ar(methods)[1:]
    for pid, prompt in prompts.items():
        ids = encode(pair, prompt)
        ar = generate(pair, ids, Autoregressive(), max_new_tokens, stop_at_eos=False)
        yield pid, ids, ar, [(m, generate(pair, ids, m, max_new_tokens, stop_at_eos=False)) for m in others]


def compare_to_ar(pair, prompts: dict, methods, max_new_tokens: int) -> pd.DataFrame:
    """One row per (prompt, method), AR first: the generated tokens, whether they equal AR's (`match_ar`), the first
    diverging position (-1: none), AR's and the method's token there, the target's top-2 gap at that position in
    AR's context (`gap_at_divergence`, in logits and in ulps of the model dtype), perplexity under the target and
    tokens per round. EOS is ignored so every method writes exactly `max_new_tokens` tokens."""
    dtype = str(pair.dtype).removeprefix("torch.")
    rows = []
    for pid, ids, ar, runs in _against_ar(pair, prompts, methods, max_new_tokens):
        gaps = margins(pair.target, ids, ar.token_ids)
        for m, gen in [(Autoregressive(), ar)] + runs:
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


def repeated_share(tokens, n: int = REPEAT_N) -> float:
    """The share of the n-grams of `tokens` that already occurred earlier in `tokens`: 0 for text that never repeats
    an n-token phrase, near 1 for a loop. NaN when there are fewer than n tokens (no n-gram to count)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the n-gram length), got {n!r}")
    tokens = list(tokens)
    seen, repeats = set(), 0
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i:i + n])
        repeats += gram in seen
        seen.add(gram)
    return repeats / (len(tokens) - n + 1) if len(tokens) >= n else math.nan


def flip_table(pair, prompts: dict, methods, max_new_tokens: int) -> pd.DataFrame:
    """One row per (prompt, method other than AR), columns FLIP_COLUMNS: the first position where the method's tokens
    leave AR's (-1: identical), the target's top-2 gap there (`gap_logits`, and `gap_spacings` in spacings of the
    model dtype at the top logit, `ulp`: the unit of the book's gap figure), computed by teacher-forcing the target
    on the prompt and the tokens both share, AR's and the method's token there, and for the whole generation of each
    the share of repeated 4-grams (`repeated_share`) and the perplexity under the target. Regenerates AR and every
    method (EOS ignored)."""
    rows = []
    for pid, ids, ar, runs in _against_ar(pair, prompts, methods, max_new_tokens):
        ar_side = {"repeat4_ar": repeated_share(ar.token_ids),
                   "perplexity_ar": perplexity(pair.target, ids, ar.token_ids)}
        for m, gen in runs:
            div = first_divergence(gen.token_ids, ar.token_ids)
            # logits at `div` see only the prompt and the first `div` tokens, which both generations share
            at = margins(pair.target, ids, ar.token_ids[:div + 1]).iloc[div] if 0 <= div < len(ar.token_ids) else None
            rows.append({
                "prompt_id": pid, "method": label(m), "max_new_tokens": max_new_tokens, "first_divergence": div,
                "gap_logits": float(at["gap"]) if at is not None else math.nan,
                "gap_spacings": float(at["gap_ulps"]) if at is not None else math.nan,
                "ar_token": ar.token_ids[div] if at is not None else None,
                "method_token": gen.token_ids[div] if 0 <= div < len(gen.token_ids) else None,
                **ar_side, "repeat4_method": repeated_share(gen.token_ids),
                "perplexity_method": (ar_side["perplexity_ar"] if div == -1  # the same tokens: the same forward
                                      else perplexity(pair.target, ids, gen.token_ids)),
            })
    return pd.DataFrame(rows, columns=list(FLIP_COLUMNS))


def store_flips(pair, prompts, methods, lengths, *, experiment: str = "flips", out=None, params: dict | None = None,
                progress: bool = True) -> pd.DataFrame:
    """`flip_table` for every prompt and length, stored into <out>/<experiment>.csv (default data/results/) with
    provenance (rows, and the session in the .meta.json sidecar) one (prompt, length) at a time. A rerun computes only
    the (method, prompt, length) units not stored yet (keyed as storage.KEY). Returns the rows asked for."""
    others = with_ar(methods)[1:]
    if not others:
        raise ValueError("store_flips compares methods with AR: give at least one method other than AR")
    lengths = _lengths(lengths)
    path = results_path(experiment, out)
    table = read_results(path, keyed=True)
    read_meta(path)  # a damaged sidecar is refused before anything is computed
    done, ident = stored_keys(table), pair_info(pair)
    key = lambda m, pid, n: config_key(m, pid, n, ident)  # noqa: E731
    units = [(pid, prompt, n) for pid, prompt in as_prompts(prompts) for n in lengths]
    wanted = {key(m, pid, n) for pid, _, n in units for m in others}
    session, wrote = provenance(pair, params), False
    from tqdm.auto import tqdm

    for pid, prompt, n in tqdm(units, desc=experiment, unit="prompt", disable=not progress):
        todo = [m for m in others if key(m, pid, n) not in done]
        if not todo:
            continue
        found = flip_table(pair, {pid: prompt}, todo, n)
        rows = [{"experiment": experiment, **row, **dict(zip(("method_type", "method_params"), identity(m))),
                 **ident, **row_provenance(session), "date_utc": utc_now()}
                for m, row in zip(todo, found.to_dict("records"))]
        if not wrote:  # this session's first rows: record it (a rerun with nothing to do records none)
            _write_meta(path, session)
            wrote = True
        table = _append(path, table, rows)
    return table[[k in wanted for k in _keys(table)]].reset_index(drop=True)
