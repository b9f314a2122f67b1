"""The experiments behind the book's numbers, each defined once: what runs, on which prompts, at which lengths.

    df = load_or_run("methods")                              # the stored session results (data/results/methods.csv)
    df = run_experiment("methods", pair, preset="session")   # (re)run them; resumable, finished configurations skipped
    python benchmarks/run_experiments.py methods length --preset session

An experiment has three presets:
- "smoke": 1 prompt, 8 new tokens, two to four methods, a 1-token warm-up. Checks the plumbing in seconds (a minute
  with the embedded pair); its numbers mean nothing.
- "session": what one sitting on a 2-core CPU affords (the whole set is budgeted at about 40 minutes where AR runs
  ~2.5-3 tok/s, see `estimate_seconds`): short generations, small grids, one or two prompts. The book's figures.
- "full": the research's grids (450 tree configurations, 100..1000 tokens, several prompts). Hours on a GPU, days on
  this CPU; run it in pieces (it resumes).

Results go through `bench.run_benchmark` into `<out>/<file>.csv` (default data/results/), where <file> is the
experiment's name for the session preset and `<name>-<preset>` for the others, so a smoke check never mixes with the
book's data. `load_experiment` reads them back, keeps only the configurations the preset defines, and adds the
columns recorded per run (`variant`, `target_bytes`, `draft_bytes`).

Warm-up: before the timed runs, every method with work left generates `warmup_tokens` (8) tokens once per process,
untimed, instead of the harness's full-length warm-up, which would double the cost of a session. The one-time costs
a warm-up absorbs (allocator growth, lazy initialisation, transformers' generate set-up) do not depend on the length.

Notebooks call `load_or_run(name, run=run_experiments, smoke=smoke, ...)`: stored results, or a rerun, or (smoke mode
only, when nothing is stored) a clearly labelled live run of the smoke preset so that the book builds before any
results exist. `data_note` / `plan_note` say in markdown where the rows came from and what the preset runs.
"""
from __future__ import annotations

import copy
import functools
import importlib
import json
import math
import shlex
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .adaptive import DynaTree
from .bench import distinct, read_results, results_path, run_benchmark, stored_keys, with_ar
from .decoding import encode, generate
from .methods import Autoregressive, FixedTree, HFAssisted, HFPromptLookup, Linear, label
from .ngram import HybridTree, PromptLookup
from .provenance import pair_info
from .streaming import Streaming
from .topn import TopNTree

PRESETS = ("smoke", "session", "full")
VARIANTS = ("base", "int8")  # base: the pair as given; int8: the target's weights int8 (a copy, the pair is untouched)
COMMAND = "python benchmarks/run_experiments.py {name} --preset {preset}"


class MissingResults(FileNotFoundError):
    """No stored results for an experiment; the message says which command produces them."""


@dataclass(frozen=True)
class Plan:
    """What one preset of one experiment runs.

    Prompts are the first `prompts` of `prompt_set`, or, when `prompt_tokens` is given, the first `prompts` long
    texts of source `prompt_set` ("code", "prose", "technical") cut to exactly each of those token counts.
    """

    methods: tuple
    lengths: tuple[int, ...]
    prompt_set: str = "humaneval"
    prompts: int = 1
    prompt_tokens: tuple[int, ...] = ()
    repeats: int = 1
    warmup_tokens: int = 8
    dtype: str | None = None  # the dtype the experiment needs (quality: float32); None: whatever the pair has
    variants: tuple[str, ...] = ("base",)
    note: str = ""

    def __post_init__(self):
        if not self.methods:
            raise ValueError("methods is empty")
        with_ar(self.methods)  # labels must be unique: they key the stored results
        for n in (*self.lengths, *self.prompt_tokens):
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"lengths and prompt_tokens must be integers >= 1, got {n!r}")
        if not self.lengths:
            raise ValueError("lengths is empty")
        if not isinstance(self.prompts, int) or self.prompts < 1:
            raise ValueError(f"prompts must be an integer >= 1, got {self.prompts!r}")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {self.repeats!r}")
        if not isinstance(self.warmup_tokens, int) or self.warmup_tokens < 0:
            raise ValueError(f"warmup_tokens must be an integer >= 0, got {self.warmup_tokens!r}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {self.variants!r}")

    def prompt_ids(self) -> list[str]:
        """The ids the results are stored under (known without loading a model)."""
        if self.prompt_tokens:
            return [f"{self.prompt_set}{i}-{n}tok" for n in self.prompt_tokens for i in range(self.prompts)]
        from .prompts import load_prompts

        return list(load_prompts(self.prompt_set, self.prompts)["id"])

    def prompt_dict(self, pair) -> dict:
        """{id: prompt}: text for a prompt set, token ids for prompts cut to a token count."""
        from .prompts import load_prompts, prompt_of_length

        if self.prompt_tokens:
            if pair.tokenizer is None:
                raise ValueError("prompts of a given token count need the pair's tokenizer")
            return {f"{self.prompt_set}{i}-{n}tok": prompt_of_length(pair.tokenizer, n, self.prompt_set, i)
                    for n in self.prompt_tokens for i in range(self.prompts)}
        table = load_prompts(self.prompt_set, self.prompts)
        return dict(zip(table["id"], table["text"]))


# ---------------------------------------------------------------------------------------------------------------------
# The registry. Each entry maps a preset to its Plan; the functions run on every lookup, so an optional method
# module that appears later (dynatree_lib.costmodel) is picked up without editing this file.

SMOKE_LENGTHS = (8,)
SMOKE = {"warmup_tokens": 1}  # smoke numbers mean nothing: a 1-token warm-up only exercises the code path


def optional_method(module: str, name: str, **options) -> list:
    """[module.name(**options)] from a library module that may not exist yet (then []), e.g. the hardware-aware
    method of dynatree_lib.costmodel."""
    try:
        mod = importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.{module}":
            raise  # the module exists but is broken: say so rather than silently dropping its method
        return []
    return [getattr(mod, name)(**options)]


def _methods() -> dict[str, Plan]:
    """Every method on HumanEval prompts: throughput, speedup, TTFT/TPOT, memory, acceptance (figures 4, 7, 8)."""
    peers = [HFAssisted(), HFPromptLookup()]
    small = FixedTree(depth=4, branch=2, threshold=0.03, max_nodes=16)  # CPU-sized: few nodes per verification
    # The research's fixed-tree baseline and its best configuration; in the session preset they are measured by
    # `length`/`ablation` and `param_search` instead, to keep the session within its budget.
    research = [FixedTree(depth=5, branch=2, threshold=0.03, max_nodes=128),
                FixedTree(depth=8, branch=3, threshold=0.03, max_nodes=128)]
    ours = [DynaTree(phase=1), DynaTree(phase=2), DynaTree(phase=3), TopNTree(), HybridTree(), PromptLookup()]
    ours += optional_method("costmodel", "HardwareAware")
    # The same methods with an int4 copy of the draft (the draft's cost is what limits a CPU; tokens are unchanged),
    # transformers' assisted generation included, so that the comparison with it is also made at equal drafts.
    int4 = [HFAssisted(draft_bits=4), Linear(6, draft_bits=4), FixedTree(depth=5, branch=2, draft_bits=4),
            DynaTree(phase=3, draft_bits=4), *optional_method("costmodel", "HardwareAware", draft_bits=4)]
    return {
        "smoke": Plan((HFAssisted(), Linear(4), small, DynaTree(phase=3)), SMOKE_LENGTHS, **SMOKE),
        "session": Plan((*peers, Linear(4), Linear(6), small, *ours, *int4), (128,), prompts=2),
        "full": Plan((*peers, *(Linear(k) for k in range(4, 9)), small, *research, *ours, *int4), (128, 256, 512),
                     prompts=10,
                     repeats=3),
    }


def _length() -> dict[str, Plan]:
    """Throughput over generation length (figure 3)."""
    methods = (HFAssisted(), Linear(6), FixedTree(depth=5, branch=2), DynaTree(phase=3), HFAssisted(draft_bits=4),
               DynaTree(phase=3, draft_bits=4))
    full = (HFAssisted(), Linear(6), Linear(8), FixedTree(depth=5, branch=2),
            FixedTree(depth=8, branch=3, threshold=0.05), DynaTree(phase=3), HFAssisted(draft_bits=4),
            DynaTree(phase=3, draft_bits=4))
    return {
        "smoke": Plan((Linear(4), DynaTree(phase=3)), (4, 8), **SMOKE),
        "session": Plan(methods, (64, 128, 256)),
        "full": Plan(full, (100, 200, 300, 500, 1000), prompts=3, repeats=2),
    }


def _tree_grid(depths, branches, thresholds) -> tuple:
    return tuple(FixedTree(depth=d, branch=b, threshold=t, max_nodes=128)
                 for d in depths for b in branches for t in thresholds)


def _param_search() -> dict[str, Plan]:
    """The fixed tree's depth x branch x threshold grid (figure 5)."""
    return {
        "smoke": Plan(_tree_grid((2, 3), (2,), (0.1,)), SMOKE_LENGTHS, **SMOKE),
        "session": Plan(_tree_grid((3, 5, 8), (2, 3), (0.03, 0.1)), (24,), prompts=2,
                        note="12 configurations at 24 tokens on 2 prompts; the research's grid is 450"),
        "full": Plan(_tree_grid(range(3, 9), (2, 3, 4), (0.01, 0.02, 0.03, 0.05, 0.1)), (100, 200, 300, 500, 1000),
                     prompts=3),
    }


def _ablation_methods(depths) -> tuple:
    methods = []
    for d in depths:
        methods += [FixedTree(depth=d, branch=2)] + [DynaTree(phase=p, base_depth=d) for p in (1, 2, 3)]
    return (*methods, DynaTree(phase=3, pruning=False), DynaTree(phase=3, node_budget=False))


def _ablation() -> dict[str, Plan]:
    """Fixed tree -> phase 1 -> 2 -> 3 at base depth 4/5/6; phase 3 without pruning / without node budget (fig. 6)."""
    return {
        "smoke": Plan((FixedTree(depth=5, branch=2), DynaTree(phase=3), DynaTree(phase=3, pruning=False)),
                      SMOKE_LENGTHS, **SMOKE),
        "session": Plan(_ablation_methods((4, 5, 6)), (24,), note="24 new tokens; the research's ablation ran at 500"),
        "full": Plan(_ablation_methods((4, 5, 6)), (100, 500, 1000), prompts=3),
    }


def _sensitivity_methods(confidences, branch_ranges) -> tuple:
    methods = [DynaTree(phase=3, high_conf=h, low_conf=lo) for h, lo in confidences]
    methods += [DynaTree(phase=3, min_branch=a, default_branch=b, max_branch=c) for a, b, c in branch_ranges]
    return tuple(dict.fromkeys(methods))  # the research default appears in both lists: once


def _sensitivity() -> dict[str, Plan]:
    """DynaTree's confidence thresholds (high/low) and branch ranges (min/default/max)."""
    return {
        "smoke": Plan(_sensitivity_methods([(0.9, 0.4)], [(2, 2, 3)]), SMOKE_LENGTHS, **SMOKE),
        "session": Plan(_sensitivity_methods([(0.9, 0.4), (0.8, 0.3), (0.95, 0.5)], [(1, 2, 3), (2, 2, 3), (1, 2, 4)]),
                        (24,), note="24 new tokens; the research's sensitivity study ran at 500"),
        "full": Plan(_sensitivity_methods([(0.95, 0.5), (0.9, 0.4), (0.85, 0.35), (0.8, 0.3), (0.7, 0.2)],
                                          [(1, 2, 3), (2, 2, 3), (1, 2, 4), (1, 3, 4), (2, 3, 4)]),
                     (500,), prompts=3),
    }


def _prompt_length() -> dict[str, Plan]:
    """Prompt length 50..1000 tokens (figure 9): long code texts cut to an exact token count."""
    methods = (Linear(6), DynaTree(phase=3))
    return {
        "smoke": Plan((Linear(4),), SMOKE_LENGTHS, prompt_set="code", prompt_tokens=(16, 32), **SMOKE),
        "session": Plan(methods, (24,), prompt_set="code", prompt_tokens=(50, 200, 500)),
        "full": Plan((HFAssisted(), *methods, FixedTree(depth=5, branch=2)), (128,), prompt_set="code",
                     prompts=3, prompt_tokens=(50, 100, 200, 500, 1000)),
    }


def _streaming_methods(caches) -> tuple:
    inner = (Linear(6), FixedTree(depth=5, branch=2))
    return (*inner, *(Streaming(m, cache_size=c) for c in caches for m in (Autoregressive(), *inner)))


def _streaming() -> dict[str, Plan]:
    """StreamingLLM caches (sinks + recent window) under AR, linear and tree decoding: compressions and speed."""
    return {
        "smoke": Plan((Linear(4), Streaming(Linear(4), cache_size=16)), SMOKE_LENGTHS, **SMOKE),
        "session": Plan(_streaming_methods((64, 128)), (32,),
                        note="caches of 64/128 tokens for a ~100-token prompt + 32 new tokens; the research's "
                             "were 256..2048 at 2000 tokens"),
        "full": Plan(_streaming_methods((256, 512, 1024, 2048)), (500, 2000), prompts=2),
    }


def _int8() -> dict[str, Plan]:
    """Int8 target weights against the pair as given: speed and memory."""
    return {
        "smoke": Plan((Linear(4),), SMOKE_LENGTHS, variants=VARIANTS, **SMOKE),
        "session": Plan((Linear(6), DynaTree(phase=3)), (32,), variants=VARIANTS),
        "full": Plan((HFAssisted(), Linear(6), FixedTree(depth=5, branch=2), DynaTree(phase=3)), (128, 500),
                     prompts=5, variants=VARIANTS),
    }


def _quality() -> dict[str, Plan]:
    """float32 exactness (every greedy method's tokens equal AR's) and perplexity of the generations (figure 10)."""
    methods = (HFAssisted(), Linear(6), FixedTree(depth=5, branch=2), DynaTree(phase=3), TopNTree(), HybridTree(),
               PromptLookup(), *optional_method("costmodel", "HardwareAware"))
    return {
        "smoke": Plan((Linear(4), DynaTree(phase=3)), SMOKE_LENGTHS, dtype="float32", **SMOKE),
        "session": Plan(methods, (16,), prompts=2, dtype="float32"),
        "full": Plan(methods, (128,), prompts=20, dtype="float32"),
    }


EXPERIMENTS = {
    "methods": _methods,
    "length": _length,
    "param_search": _param_search,
    "ablation": _ablation,
    "sensitivity": _sensitivity,
    "prompt_length": _prompt_length,
    "streaming": _streaming,
    "int8": _int8,
    "quality": _quality,
}
# Experiments whose numbers another one already holds: same plans, same stored file.
ALIASES = {"ttft_tpot_memory": "methods"}


def names() -> list[str]:
    return [*EXPERIMENTS, *ALIASES]


def _resolve(name: str) -> str:
    if not isinstance(name, str) or (name not in EXPERIMENTS and name not in ALIASES):
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(names())}")
    return ALIASES.get(name, name)


def describe(name: str) -> str:
    """The experiment's one-line description."""
    return (EXPERIMENTS[_resolve(name)].__doc__ or "").strip()


def plan(name: str, preset: str = "session") -> Plan:
    """The Plan of one preset of an experiment."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    return EXPERIMENTS[_resolve(name)]()[preset]


def file_name(name: str, preset: str = "session") -> str:
    """The results file stem: the experiment's name for the session preset, `<name>-<preset>` otherwise."""
    base = _resolve(name)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    return base if preset == "session" else f"{base}-{preset}"


def command(name: str, preset: str = "session") -> str:
    """The shell command that produces an experiment's stored results."""
    return COMMAND.format(name=shlex.quote(_resolve(name)), preset=preset)


# ---------------------------------------------------------------------------------------------------------------------
# Running


def variant_pair(pair, variant: str):
    """The pair to run a variant on. "int8" quantizes a copy of the target (bitsandbytes' reload on CUDA when
    installed, else torch's int8 kernels), so the caller's pair is never modified."""
    from .models import ModelPair
    from .quant import bitsandbytes_available, quantize_int8

    if variant == "base":
        return pair
    if variant != "int8":
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if pair.device.type == "cuda" and bitsandbytes_available():
        target = quantize_int8(pair.target, "bitsandbytes")  # a re-loaded model; the original stays as it is
    else:
        target = quantize_int8(copy.deepcopy(pair.target), "torch")
    return ModelPair(target, pair.draft, pair.tokenizer, _variant_name(pair, variant))


def _variant_name(pair, variant: str) -> str:
    return pair_info(pair)["pair"] if variant == "base" else f"{pair.name or 'pair'}+{variant}"


def _pending(pair, p: Plan, prompts: dict, path: Path, variant: str = "base") -> list:
    """The methods (AR first) with at least one configuration of `variant` not stored in `path` yet."""
    ident = pair_info(pair)
    name = _variant_name(pair, variant)
    done = stored_keys(read_results(path))
    methods = with_ar(p.methods)
    pending = [m for m in methods if any((label(m), pid, n, name, ident["dtype"], ident["device"]) not in done
                                         for pid in prompts for n in p.lengths)]
    if pending and pending[0] is not methods[0]:
        pending.insert(0, methods[0])  # AR is re-measured whenever a prompt has work left
    return pending


def _model_bytes(model) -> int | None:
    from .quant import model_memory_bytes

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
        from .models import load_pair

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
    labels = [label(m) for m in with_ar(p.methods)]
    keep = df["method"].isin(labels) & df["max_new_tokens"].isin(p.lengths) & df["prompt_id"].isin(p.prompt_ids())
    if dtype is not None:
        keep &= df["dtype"] == str(dtype).removeprefix("torch.")
    if device is not None:
        keep &= df["device"] == str(device)
    df = df[keep].reset_index(drop=True)
    if df.empty:
        which = " with that dtype/device" if dtype or device else ""
        raise MissingResults(f"results stored for experiment {_resolve(name)!r} ({preset} preset) in {path}, but "
                             f"none for its current configurations{which}; produce them with: {command(name, preset)}")
    params = [json.loads(s) if isinstance(s, str) and s else {} for s in df.get("params", [""] * len(df))]
    for column in RUN_COLUMNS:
        df[column] = [prm.get(column, "base" if column == "variant" else math.nan) for prm in params]
    planned = len(labels) * len(p.lengths) * len(p.prompt_ids()) * len(p.variants)
    stored = df.drop_duplicates(["method", "prompt_id", "max_new_tokens", "variant"]).shape[0]
    df.attrs.update(experiment=_resolve(name), preset=preset, source=str(path), missing=max(planned - stored, 0))
    return df


@functools.lru_cache(maxsize=1)
def _cached_pair(target, draft, dtype, device):
    from .models import load_pair

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


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def plan_note(name: str, preset: str = "session") -> str:
    """Markdown: what a preset of an experiment runs (methods, prompts, lengths, repeats), for the notebooks."""
    p = plan(name, preset)
    labels = [label(m) for m in with_ar(p.methods)]
    shown = ", ".join(f"`{m}`" for m in labels[:16]) + (f", ... ({len(labels) - 16} more)" if len(labels) > 16 else "")
    if p.prompt_tokens:
        prompts = (f"{_count(p.prompts, 'stored ' + p.prompt_set + ' text')} cut to exactly "
                   f"{', '.join(map(str, p.prompt_tokens))} prompt tokens")
    else:
        prompts = f"the first {_count(p.prompts, p.prompt_set + ' prompt')}"
    variants = f"; target variants: {', '.join(p.variants)}" if p.variants != ("base",) else ""
    seconds = estimate_seconds(name, preset)
    estimate = f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.0f} h"
    return (f"**Plan** (`{_resolve(name)}`, {preset} preset): {len(labels)} methods ({shown}); {prompts}; "
            f"{', '.join(map(str, p.lengths))} new tokens; {_count(p.repeats, 'timed run')} per configuration after "
            f"a warm-up of {p.warmup_tokens} tokens per method; dtype {p.dtype or 'as loaded'}{variants}. Estimated "
            f"{estimate} on the 2-core CPU."
            + (f" {p.note[0].upper()}{p.note[1:]}." if p.note else ""))


def data_note(df: pd.DataFrame) -> str:
    """Markdown: where the rows come from (file, pair, dtype, device, hardware, threads, code version, dates) and how
    complete they are. Notebooks print it under every loaded experiment."""
    def values(column):
        # provenance leaves gpu empty on a CPU
        return ", ".join(distinct(df, column)) or ("none" if column == "gpu" and column in df.columns else "?")

    commits = distinct(df, "git_commit", 10)
    dirty = bool(df["git_dirty"].fillna(False).astype(bool).any()) if "git_dirty" in df.columns else False
    dates = distinct(df, "date_utc", 10)
    lines = [
        f"**Data:** {len(df)} rows of experiment `{df.attrs.get('experiment', '?')}` "
        f"({df.attrs.get('preset', '?')} preset) from `{df.attrs.get('source', '?')}`.",
        f"Pair {values('pair')}; dtype {values('dtype')}; device {values('device')}; CPU {values('cpu')}; "
        f"GPU {values('gpu')}; torch threads {values('torch_threads')}; torch {values('torch_version')}, "
        f"transformers {values('transformers_version')}.",
        f"Code: commit {', '.join(commits) or '?'}{' with uncommitted changes' if dirty else ''}; "
        f"measured {dates[0] if dates else '?'}"
        + (f" to {dates[-1]}" if dates and dates[-1] != dates[0] else "") + ".",
    ]
    missing = df.attrs.get("missing", 0)
    if missing:
        lines.append(f"**Incomplete:** {missing} planned configuration(s) are not stored yet; the tables below show "
                     f"what is.")
    if df.attrs.get("smoke_fallback"):
        lines.append("**Smoke run:** these rows come from a live run of the smoke preset, not from stored results; "
                     "they are not measurements.")
    return "  \n".join(lines)


__all__ = ["ALIASES", "EXPERIMENTS", "MissingResults", "PRESETS", "Plan", "command", "data_note", "describe",
           "estimate_seconds", "file_name", "load_experiment", "load_or_run", "names", "optional_method", "plan",
           "plan_note", "run_experiment", "variant_pair"]

