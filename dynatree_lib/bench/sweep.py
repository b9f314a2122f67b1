"""Running and loading experiments: pending configurations, warm-up, resume, the stored rows for a chapter."""
from __future__ import annotations

import functools
import json
import math
import tempfile
import weakref
from pathlib import Path

import pandas as pd

from ..core.loop import encode, generate
from ..methods.base import label
from .plans import VARIANTS, MissingResults, Plan, _resolve, command, file_name, plan
from .harness import run_benchmark, with_ar
from ..models.provenance import pair_info, repo_relative
from .storage import config_key, read_results, results_path, stored_keys

def _show(markdown: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(markdown))
            return
    except ImportError:
        pass
    print(markdown.replace("**", "").replace("*", ""))




def variant_pair(pair, variant: str):
    """The pair to run a variant on. "int8" quantizes a copy of the target (ModelPair.with_target_bits: bitsandbytes'
    reload on CUDA when installed, else torch's int8 kernels), so the caller's pair is never modified."""
    if variant == "base":
        return pair
    if variant != "int8":
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return pair.with_target_bits(8)


def _variant_name(pair, variant: str) -> str:
    from ..models.pair import quantized_name

    return pair_info(pair)["pair"] if variant == "base" else quantized_name(pair.name, 8)


def _pending(pair, p: Plan, prompts: dict, path: Path, variant: str = "base") -> list:
    """The methods (AR first) with at least one configuration of `variant` not stored in `path` yet."""
    ident = pair_info(pair)
    name = _variant_name(pair, variant)
    done = stored_keys(read_results(path, keyed=True))
    methods = with_ar(p.methods)
    pending = [m for m in methods if any(config_key(m, pid, n, {**ident, "pair": name}) not in done
                                         for pid in prompts for n in p.lengths)]
    if pending and pending[0] is not methods[0]:
        pending.insert(0, methods[0])  # AR is re-measured whenever a prompt has work left
    return pending


def _model_bytes(model) -> int | None:
    from ..models.quant import model_memory_bytes

    return None if model is None else model_memory_bytes(model)


def _check_dtype(p: Plan, pair, name: str) -> None:
    if p.dtype is not None and str(pair.dtype).removeprefix("torch.") != p.dtype:
        raise ValueError(f"experiment {name!r} needs a {p.dtype} pair (e.g. load_pair('embedded', dtype="
                         f"'{p.dtype}')), got {pair.dtype}")


# target model -> {(draft id, method label)} warmed up in this process; weak, so a freed int8 copy drops out
_WARMED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _warm_up(pair, p: Plan, prompts: dict, pending: list, progress: bool) -> None:
    """One short untimed generation per pending method that has not run in this process yet (module docstring)."""
    if p.warmup_tokens == 0:
        return
    warmed = _WARMED.setdefault(pair.target, set())
    pending = [m for m in pending if (id(pair.draft), label(m)) not in warmed]
    if not pending:
        return
    ids = encode(pair, next(iter(prompts.values())))
    from tqdm.auto import tqdm

    for m in tqdm(pending, desc="warm-up", unit="method", disable=not progress, leave=False):
        generate(pair, ids, m, min(p.warmup_tokens, max(p.lengths)), stop_at_eos=False)
        warmed.add((id(pair.draft), label(m)))


def run_experiment(name: str, pair=None, preset: str = "session", out=None, *, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) one preset of an experiment; returns its stored rows, as `load_experiment` does.

    `pair`: a ModelPair, or None to load the embedded pair in the dtype the experiment needs (bfloat16 unless it
    says otherwise). `out`: the results folder (default data/results/).
    """
    p = plan(name, preset)
    if pair is None:
        from ..models.pair import load_pair

        pair = load_pair("embedded", dtype=p.dtype or "bfloat16")
    _check_dtype(p, pair, name)
    stem = file_name(name, preset)
    path = results_path(stem, out)
    prompts = p.prompt_dict(pair)
    for variant in p.variants:
        pending = _pending(pair, p, prompts, path, variant)
        if not pending:
            continue  # all stored: don't even build the variant (an int8 copy of the target takes a while)
        vpair = variant_pair(pair, variant)
        try:
            _warm_up(vpair, p, prompts, pending, progress)
            params = {"experiment": _resolve(name), "preset": preset, "variant": variant,
                      "warmup_tokens": p.warmup_tokens, "target_bytes": _model_bytes(vpair.target),
                      "draft_bytes": _model_bytes(vpair.draft)}
            run_benchmark(vpair, p.methods, prompts, list(p.lengths), repeats=p.repeats, warmup=0, out=path.parent,
                          experiment=stem, params=params, progress=progress)
        finally:
            del vpair  # an int8 copy of the target is gigabytes: free it before the next variant
    return load_experiment(name, preset, out)


RUN_COLUMNS = ("variant", "target_bytes", "draft_bytes")


def load_experiment(name: str, preset: str = "session", out=None, *, dtype: str | None = None,
                    device: str | None = None) -> pd.DataFrame:
    """The stored rows of one preset of an experiment, restricted to the configurations its plan defines (and to
    `dtype` / `device` when given), with the per-run columns `variant`, `target_bytes`, `draft_bytes`.

    Raises MissingResults, naming the command that produces them, when none are stored. `df.attrs["missing"]` is
    the number of planned configurations not stored yet (a partly run grid loads; the notebook says how partly).
    """
    p = plan(name, preset)
    path = results_path(file_name(name, preset), out)
    df = read_results(path)
    where = f"{path}" + (f" with dtype={dtype}" if dtype else "") + (f" on device={device}" if device else "")
    if df.empty:
        raise MissingResults(f"no stored results for experiment {_resolve(name)!r} ({preset} preset) in {where}; "
                             f"produce them with: {command(name, preset)}")
    df = rows_for(df, p.methods, p.prompt_ids(), p.lengths, dtype=dtype, device=device)
    if df.empty:
        which = " with that dtype/device" if dtype or device else ""
        raise MissingResults(f"results stored for experiment {_resolve(name)!r} ({preset} preset) in {path}, but "
                             f"none for its current configurations{which}; produce them with: {command(name, preset)}")
    params = [json.loads(s) if isinstance(s, str) and s else {} for s in df.get("params", [""] * len(df))]
    for column in RUN_COLUMNS:
        df[column] = [prm.get(column, "base" if column == "variant" else math.nan) for prm in params]
    planned = len(with_ar(p.methods)) * len(p.lengths) * len(p.prompt_ids()) * len(p.variants)
    stored = df.drop_duplicates(["method", "prompt_id", "max_new_tokens", "variant"]).shape[0]
    df.attrs.update(experiment=_resolve(name), preset=preset, source=repo_relative(path), missing=max(planned - stored, 0))
    return df


def rows_for(df: pd.DataFrame, methods, prompt_ids, lengths, *, dtype=None, device=None) -> pd.DataFrame:
    """The stored rows of `methods` (AR added) on `prompt_ids` at `lengths`, and of `dtype` / `device` when given."""
    keep = (df["method"].isin([label(m) for m in with_ar(methods)]) & df["prompt_id"].isin(list(prompt_ids))
            & df["max_new_tokens"].isin(list(lengths)))
    if dtype is not None:
        keep &= df["dtype"] == str(dtype).removeprefix("torch.")
    if device is not None:
        keep &= df["device"] == str(device)
    return df[keep].reset_index(drop=True)


@functools.lru_cache(maxsize=1)
def _cached_pair(target, draft, dtype, device):
    from ..models.pair import load_pair

    return load_pair(target, draft, dtype=dtype, device=device)


def load_or_run(name: str, pair=None, *, run: bool = False, preset: str = "session", smoke: bool = False, out=None,
                target: str = "embedded", draft: str | None = None, dtype: str | None = None,
                device: str = "cpu") -> pd.DataFrame:
    """What a notebook calls: the stored results of `name`, or a fresh run of them.

    run=True: run (resume) the preset with `pair` (or the pair named by target/draft/dtype/device, loaded once and
    cached) and return its rows; with smoke=True that is the smoke preset (stored as `<name>-smoke`).
    run=False: load the stored rows (of `dtype`/`device`; an experiment that needs a dtype, like quality's float32,
    uses that one); when there are none, raise MissingResults naming the command that produces them, except with
    smoke=True: then show a clearly labelled note and return a live run of the smoke preset (in a temporary folder,
    nothing stored) so that the notebook's figures still render; those rows carry `df.attrs["smoke_fallback"]`.
    """
    p = plan(name, preset)
    dtype = p.dtype or dtype

    def get_pair():
        return pair if pair is not None else _cached_pair(target, draft, dtype or "bfloat16", device)

    if run:  # in smoke mode a rerun is the smoke preset, into its own file: never smoke rows in the book's data
        return run_experiment(name, get_pair(), "smoke" if smoke else preset, out)
    try:
        return load_experiment(name, preset, out, dtype=dtype, device=device)
    except MissingResults as missing:
        if not smoke:
            raise
        note = (f"**Note (smoke mode): no stored results.** {missing}. The figures below come from a live run of the "
                f"*smoke* preset (1 prompt, a few tokens): they check the plumbing and are **not measurements**.")
        _show(note)
        with tempfile.TemporaryDirectory(prefix=f"dynatree-{name}-") as folder:
            df = run_experiment(name, get_pair(), "smoke", folder, progress=False)
        df.attrs["smoke_fallback"] = True
        return df


# ---------------------------------------------------------------------------------------------------------------------
# Budget and summaries


# Rates for estimates, from data/results/goal.csv (quiet 2-core CPU, bf16, 128 tokens): AR 3.95 tok/s, speculative
# methods 1.06-1.09x with the bf16 draft and 2.3-2.5x with its int4 copy.
AR_TOKENS_PER_S, SPEEDUP, QUANTIZED_SPEEDUP = 3.9, 1.05, 2.3


def estimate_seconds(name: str, preset: str = "session", *, ar_tokens_per_s: float = AR_TOKENS_PER_S,
                     speedup: float = SPEEDUP, quantized_speedup: float = QUANTIZED_SPEEDUP,
                     prefill_tokens_per_s: float = 90.0, prompt_tokens: int = 120) -> float:
    """A rough wall-clock estimate of a preset on the 2-core CPU with the embedded pair, nothing stored yet.

    Per prompt x length: AR takes length / ar_tokens_per_s, any other method length / (ar_tokens_per_s x speedup),
    or x quantized_speedup with a quantized draft (`draft_bits`); every run also prefills its prompt (`prompt_tokens`
    for a prompt set), plus one perplexity forward per prompt x length; each method warms up once per variant.
    float32 counts double (twice the bytes per weight).
    """
    p = plan(name, preset)
    others = with_ar(p.methods)[1:]
    methods = len(others) + 1
    # seconds per generated token, summed over the methods other than AR
    spec_s = sum(1 / (ar_tokens_per_s * (quantized_speedup if getattr(m, "draft_bits", None) else speedup))
                 for m in others)
    prompt_lens = [n for n in p.prompt_tokens for _ in range(p.prompts)] or [prompt_tokens] * p.prompts
    timed = 0.0
    for prompt in prompt_lens:
        prefill = prompt / prefill_tokens_per_s
        for n in p.lengths:
            timed += p.repeats * (n / ar_tokens_per_s + n * spec_s + methods * prefill)
            timed += (prompt + n) / prefill_tokens_per_s  # perplexity
    warm = min(p.warmup_tokens, max(p.lengths)) * spec_s + methods * prompt_lens[0] / prefill_tokens_per_s
    factor = 2.0 if p.dtype == "float32" else 1.0
    return factor * len(p.variants) * (timed + warm)


__all__ = ['AR_TOKENS_PER_S', 'QUANTIZED_SPEEDUP', 'RUN_COLUMNS', 'SPEEDUP', 'estimate_seconds', 'load_experiment', 'load_or_run', 'rows_for', 'run_experiment', 'variant_pair']
