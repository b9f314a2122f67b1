"""The benchmark harness: every (method, prompt, max_new_tokens) timed the same way, into tidy tables with provenance.

    df = run_benchmark(pair, [Linear(5), FixedTree()], load_prompts("humaneval", 5), 128, experiment="goal")

Rules every number obeys:
- Full length: EOS is ignored (stop_at_eos=False), so every method generates exactly max_new_tokens tokens.
- Speedup is a ratio of two walls measured in the same process: Autoregressive (AR) is always run for each
  (prompt, max_new_tokens) in this call, even when its own row was stored by an earlier run, and a method's
  `speedup` is the median AR wall / the method's wall. `ar_wall_s` on each row says which reference was used.
  When `HFGenerate` (transformers' own greedy generate) is among the methods, it is measured beside AR for every
  (prompt, max_new_tokens) too, and `speedup` divides the faster of the two walls (`baseline` names it;
  `speedup_vs_ar` keeps the ratio over AR, `hf_generate_wall_s` the other wall): a slow reference would flatter.
- Warm-up: each method runs `warmup` untimed generations of at most WARMUP_TOKENS tokens the first time it runs
  in a call (one-time costs: allocator growth, lazy init, transformers' generate set-up), then `repeats` timed ones.
- What is measured outside the timed region: perplexity (one extra target forward over prompt + generation) and
  the token match against AR.

Storage and resume: with `experiment=`, rows go to `<out>/<experiment>.csv` (default data/results/), one
configuration (method x prompt x length, all repeats) at a time. Each append rewrites the whole file atomically
(models.provenance.write_atomic), so a killed sweep leaves the last finished configuration on disk and never a
half-written file. A rerun skips configurations already stored, keyed on (method type, method parameters, prompt
id, max_new_tokens, pair, dtype, device): storage.KEY; a damaged file (cut off, unreadable, a key missing) is
refused before anything runs, never resumed into duplicates. One process per experiment file at a time: two
concurrent writers would overwrite each other's appends. The sidecar `<experiment>.meta.json` holds the full
provenance of every session that wrote rows to the file (a rerun with nothing to measure adds none).
"""
from __future__ import annotations

import math
import os
import statistics

import pandas as pd
import torch

from ..core.checks import _check_int
from ..core.loop import check_inputs, encode, generate, running_pair
from ..core.timing import ForwardTimer
from ..methods.base import Autoregressive, label
from ..methods.hf import HFGenerate
from ..models.provenance import pair_info, provenance, row_provenance, utc_now
from ..methods.names import identity
from .storage import _append, _keys, _write_meta, config_key, read_meta, read_results, results_path, stored_keys

def run_benchmark(
    pair,
    methods,
    prompts,
    max_new_tokens,
    *,
    repeats: int = 1,
    warmup: int = 1,
    reference_repeats: int | None = None,
    out: str | os.PathLike | None = None,
    experiment: str | None = None,
    params: dict | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Benchmark `methods` (AR added if absent) on every prompt and every length in `max_new_tokens` (int or list).

    `prompts`: a DataFrame with `id` and `text` (as `load_prompts` gives), a dict {id: prompt}, or a list of
    prompts (ids "0", "1", ...); a prompt is text or token ids. Returns one row per timed run, for the
    configurations asked for (stored ones included). Nothing is written unless `experiment` is given.

    `reference_repeats`: timed runs of each plain-decoding reference (AR; HFGenerate when asked for) per prompt and
    length, `repeats` when None. Every speedup divides by their median, so more of them steady every ratio: on a
    small CPU one run of plain decoding can move, back to back on one prompt, by more than the ratios compared.
    """
    _check_int("repeats", repeats, 1)
    reference_repeats = repeats if reference_repeats is None else reference_repeats
    _check_int("reference_repeats", reference_repeats, 1)
    _check_int("warmup", warmup, 0)
    if out is not None and experiment is None:
        raise ValueError("out= names where an experiment's results go; give experiment= too")
    methods = with_ar(methods)
    lengths = _lengths(max_new_tokens)
    prompt_list = [(pid, encode(pair, p)) for pid, p in as_prompts(prompts)]
    for _, ids in prompt_list:  # fail now, not two hours into a sweep
        for n in lengths:
            for m in methods:
                check_inputs(pair, ids, m, n)

    session = provenance(pair, {**(params or {}), "repeats": repeats, "reference_repeats": reference_repeats,
                                "warmup": warmup})
    ident = pair_info(pair)
    path = results_path(experiment, out) if experiment is not None else None
    table = read_results(path, keyed=True) if path is not None else pd.DataFrame()
    if path is not None:
        read_meta(path)  # a damaged sidecar is refused now, not after the first configuration was measured
    done = stored_keys(table)
    key = lambda m, pid, n: config_key(m, pid, n, ident)  # noqa: E731
    wanted = {key(m, pid, n) for pid, _ in prompt_list for n in lengths for m in methods}

    from tqdm.auto import tqdm

    bar = tqdm(total=len(wanted), initial=len(wanted & done), desc=experiment or "benchmark", unit="config",
               disable=not progress)
    bench = _Bench(pair, repeats, warmup)
    hf_greedy = next((m for m in methods if isinstance(m, HFGenerate)), None)
    new_rows: list[dict] = []
    try:
        for pid, ids in prompt_list:
            for n in lengths:
                todo = [m for m in methods if key(m, pid, n) not in done]
                if not todo:
                    continue
                bar.set_postfix_str(f"AR reference | {pid} | {n}", refresh=False)
                # the reference, measured in this process
                ar_runs = bench.measure(methods[0], ids, n, reference_repeats)
                # transformers' own greedy generate, when asked for, is a second reference: the faster one counts
                hf_runs = bench.measure(hf_greedy, ids, n, reference_repeats) if hf_greedy is not None else None
                for m in todo:
                    bar.set_postfix_str(f"{label(m)} | {pid} | {n}", refresh=False)
                    runs = ar_runs if m is methods[0] else hf_runs if m is hf_greedy else bench.measure(m, ids, n)
                    rows = [bench.row(m, pid, ids, n, r, run, ar_runs, hf_runs) for r, run in enumerate(runs)]
                    rows = [{"experiment": experiment, **row, **ident, **row_provenance(session),
                             "date_utc": utc_now()} for row in rows]
                    new_rows.extend(rows)
                    if path is not None:
                        if len(new_rows) == len(rows):  # this session's first rows: record it (a no-op rerun does not)
                            _write_meta(path, session)
                        table = _append(path, table, rows)
                    bar.update(1)
    finally:
        bar.close()
    result = table if path is not None else pd.DataFrame(new_rows)
    if result.empty:
        return result
    mask = [k in wanted for k in _keys(result)]
    return result[mask].reset_index(drop=True)


def with_ar(methods) -> list:
    """The methods with Autoregressive first (added if absent); each method once (a method keys its results)."""
    methods = list(methods)
    ar = [m for m in methods if isinstance(m, Autoregressive)]
    methods = (ar[:1] or [Autoregressive()]) + [m for m in methods if not isinstance(m, Autoregressive)]
    labels = [label(m) for m in methods]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"methods must have distinct labels (each method once: it keys its stored results); "
                         f"duplicated: {dupes}")
    return methods


def as_prompts(prompts) -> list[tuple[str, object]]:
    """Normalise prompts to [(id, prompt)] with string ids."""
    if isinstance(prompts, pd.DataFrame):
        column = next((c for c in ("input_ids", "text", "prompt") if c in prompts.columns), None)
        if "id" not in prompts.columns or column is None:
            raise ValueError("a prompts DataFrame needs an 'id' column and a 'text' (or 'prompt'/'input_ids') column")
        items = list(zip(prompts["id"], prompts[column]))
    elif isinstance(prompts, dict):
        items = list(prompts.items())
    elif isinstance(prompts, (str, torch.Tensor)) or (
        isinstance(prompts, (list, tuple)) and prompts and all(isinstance(t, int) for t in prompts)
    ):
        raise ValueError("prompts must be a collection of prompts; wrap a single prompt in a list: [prompt]")
    else:
        items = [(str(i), p) for i, p in enumerate(prompts)]
    if not items:
        raise ValueError("prompts is empty")
    ids = [str(i) for i, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError("prompt ids must be unique")
    return [(str(i), p) for i, p in items]


def _lengths(max_new_tokens) -> list[int]:
    lengths = [max_new_tokens] if isinstance(max_new_tokens, int) else list(max_new_tokens)
    for n in lengths:
        _check_int("max_new_tokens", n, 1)
    if not lengths:
        raise ValueError("max_new_tokens is empty")
    return lengths


# ---------------------------------------------------------------------------------------------------------------------
# Measuring one configuration


class _PeakMemory:
    """Peak memory of one run, and its growth over the start of the run (KV caches, activations, temporaries).

    GPU: torch.cuda max allocated. CPU: the process's RSS high-water mark (VmHWM), reset before the run through
    /proc/self/clear_refs. RSS is process-wide (both models, Python, everything else alive) and counts mmapped
    weights only while their pages are resident, so it can even sit below the parameter bytes; rows therefore
    also carry `param_bytes`, and `peak_mem_delta_bytes` isolates what the run itself added.
    """

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.start = 0

    def reset(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            pass
        self.start = self._status("VmRSS:") or _rss()

    @staticmethod
    def _status(field: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def peak(self) -> dict:
        if self.cuda:
            peak, kind = torch.cuda.max_memory_allocated(), "cuda_max_allocated"
        else:
            peak, kind = self._status("VmHWM:"), "rss_peak"
            if peak is None:  # no /proc: the RSS now is the best available
                peak, kind = _rss(), "rss_after"
        return {"peak_mem_bytes": peak, "peak_mem_delta_bytes": peak - self.start, "peak_mem_kind": kind}


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


WARMUP_TOKENS = 16


def load_1m() -> float:
    """The 1-minute load average (NaN where the platform has none): other work on the machine while something ran."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


class _Bench:
    def __init__(self, pair, repeats: int, warmup: int):
        self.pair, self.repeats, self.warmup = pair, repeats, warmup
        self.memory = _PeakMemory(pair.device)
        self.warmed: set[str] = set()
        self._ppl: dict[tuple, float] = {}

    def measure(self, method, ids: list[int], n: int, repeats: int | None = None) -> list[dict]:
        # The models that actually run: a draft_bits/draft_vocab method drafts with a copy of the draft. Made here,
        # before any hook is attached (a copy made under the timer would inherit its hooks).
        timer = ForwardTimer(running_pair(self.pair, method))
        if label(method) not in self.warmed:
            for _ in range(self.warmup):
                # One-time costs (a quantized draft copy, calibration, allocator growth) show up in a short run.
                generate(self.pair, ids, method, min(n, WARMUP_TOKENS), stop_at_eos=False)
            self.warmed.add(label(method))
        runs = []
        with timer:
            for _ in range(repeats or self.repeats):
                self.memory.reset()
                timer.reset()
                gen = generate(self.pair, ids, method, n, stop_at_eos=False)
                runs.append({"gen": gen, "memory": self.memory.peak(), "load_1m": load_1m(),
                             "forward_s": dict(timer.seconds), "forward_calls": dict(timer.calls),
                             "first_forward_s": dict(timer.first)})
        return runs

    def perplexity(self, ids: list[int], new: list[int]) -> float:
        k = (tuple(ids), tuple(new))
        if k not in self._ppl:
            self._ppl[k] = perplexity(self.pair.target, ids, new)
        return self._ppl[k]

    def row(self, method, pid: str, ids: list[int], n: int, repeat: int, run: dict, ar_runs: list[dict],
            hf_runs: list[dict] | None = None) -> dict:
        gen, stats = run["gen"], run["gen"].stats
        ar_wall = statistics.median(r["gen"].stats["wall_s"] for r in ar_runs)
        hf_wall = statistics.median(r["gen"].stats["wall_s"] for r in hf_runs) if hf_runs else math.nan
        base_wall = min(ar_wall, hf_wall) if hf_runs else ar_wall
        ar_tokens = ar_runs[0]["gen"].token_ids
        wall = stats["wall_s"]
        forward_s = sum(run["forward_s"].values())
        round_s = sum(r["round_s"] for r in gen.trace)
        divergence = first_divergence(gen.token_ids, ar_tokens)
        return {
            "method": label(method),
            "method_type": identity(method)[0],
            "method_params": identity(method)[1],
            "prompt_id": pid,
            "prompt_tokens": len(ids),
            "max_new_tokens": n,
            "repeat": repeat,
            "new_tokens": stats["new_tokens"],
            "wall_s": wall,
            "tokens_per_s": stats["tokens_per_s"],
            "speedup": base_wall / wall if wall > 0 else math.nan,  # over the faster plain decoder measured
            "baseline": "HFGenerate" if hf_runs and hf_wall < ar_wall else "AR",
            "speedup_vs_ar": ar_wall / wall if wall > 0 else math.nan,
            "ar_wall_s": ar_wall,
            "hf_generate_wall_s": hf_wall,
            "ttft_s": stats["ttft_s"],
            "tpot_s": stats["tpot_s"],
            "rounds": stats["rounds"],
            "tokens_per_round": stats["tokens_per_round"],
            "acceptance_depth": stats["acceptance_depth"],
            "acceptance_nodes": stats["acceptance_nodes"],
            "drafted_nodes": stats["drafted_nodes"],
            "accepted_nodes": stats["accepted_nodes"],
            "kv_compressions": stats.get("kv_compressions", math.nan),
            "draft_s": stats["draft_s"],
            "verify_s": stats["verify_s"],
            "commit_s": stats["commit_s"],
            "commit_share": stats["commit_s"] / round_s if round_s > 0 else math.nan,
            "target_forwards": run["forward_calls"]["target"],
            "draft_forwards": run["forward_calls"].get("draft", 0),
            "target_forward_s": run["forward_s"]["target"],
            "draft_forward_s": run["forward_s"].get("draft", 0.0),
            # the draft's first forward reads the whole prompt: time plain decoding does not spend (nan: no draft)
            "draft_prefill_s": run["first_forward_s"].get("draft", math.nan),
            "bookkeeping_share": 1 - forward_s / wall if wall > 0 else math.nan,
            **run["memory"],
            "load_1m": run["load_1m"],  # other work on the machine while this run was timed (contention shows here)
            "perplexity": self.perplexity(ids, gen.token_ids),
            "match_ar": divergence == -1,
            "first_divergence": divergence,
        }


def first_divergence(tokens: list[int], reference: list[int]) -> int:
    """Index of the first token that differs from `reference` (a length mismatch counts at the shorter end); -1
    when identical."""
    for i, (a, b) in enumerate(zip(tokens, reference)):
        if a != b:
            return i
    return -1 if len(tokens) == len(reference) else min(len(tokens), len(reference))


def continuation_logits(model, prompt_ids: list[int], new_ids: list[int]) -> torch.Tensor:
    """The logits (len(new_ids), vocab) that predict each of `new_ids` after the prompt: one full-sequence forward."""
    ids = torch.tensor([list(prompt_ids) + list(new_ids)], device=model.device)
    return model(input_ids=ids, use_cache=False, logits_to_keep=len(new_ids) + 1).logits[0, :-1]


@torch.inference_mode()
def perplexity(model, prompt_ids: list[int], new_ids: list[int]) -> float:
    """exp(mean negative log-likelihood) of `new_ids` given the prompt under `model`: one forward, float32 softmax."""
    if not new_ids:
        return math.nan
    logits = continuation_logits(model, prompt_ids, new_ids)
    logp = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(new_ids, device=logits.device)
    nll = -logp.gather(1, target[:, None]).mean()
    return float(nll.exp())
