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

import shlex
from dataclasses import dataclass

from ..core.checks import _check_int
from ..methods.adaptive import AdaptiveTree
from ..methods.base import Autoregressive, FixedTree, Linear
from ..methods.confidence import DynaTree
from ..methods.hardware import HardwareAware
from ..methods.hf import HFAssisted, HFPromptLookup
from ..methods.ngram import HybridTree, PromptLookup
from ..methods.streaming import Streaming
from ..methods.topn import TopNTree
from .grid import LENGTHS, tree_grid
from .harness import with_ar

PRESETS = ("smoke", "session", "full")
# What each preset is sized for, in the words a page prints beside the preset's name.
PRESET_SIZES = {"smoke": "a plumbing check of seconds whose numbers mean nothing",
                "session": "sized for one sitting on a 2-core CPU: short generations, one or two prompts",
                "full": "the research's grids and lengths"}
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
            _check_int("every length and prompt token count", n, 1)
        if not self.lengths:
            raise ValueError("lengths is empty")
        _check_int("prompts", self.prompts, 1)
        _check_int("repeats", self.repeats, 1)
        _check_int("warmup_tokens", self.warmup_tokens, 0)
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
# The registry: each experiment's function maps a preset to its Plan.

SMOKE_LENGTHS = (8,)
SMOKE = {"warmup_tokens": 1}  # smoke numbers mean nothing: a 1-token warm-up only exercises the code path


def _methods() -> dict[str, Plan]:
    """Every method on HumanEval prompts: throughput, speedup, TTFT/TPOT, memory, acceptance (figures 4, 7, 8)."""
    peers = [HFAssisted(), HFPromptLookup()]
    small = FixedTree(depth=4, branch=2, threshold=0.03, max_nodes=16)  # CPU-sized: few nodes per verification
    # The research's fixed-tree baseline and its best configuration; in the session preset they are measured by
    # `length`/`ablation` and `param_search` instead, to keep the session within its budget.
    research = [FixedTree(depth=5, branch=2, threshold=0.03, max_nodes=128),
                FixedTree(depth=8, branch=3, threshold=0.03, max_nodes=128)]
    ours = [AdaptiveTree(phase=1), AdaptiveTree(phase=2), AdaptiveTree(phase=3), TopNTree(), HybridTree(),
            PromptLookup()]
    # The same methods with an int4 copy of the draft (the draft's cost is what limits a CPU; tokens are unchanged),
    # transformers' assisted generation included, so that the comparison with it is also made at equal drafts.
    int4 = [HFAssisted(draft_bits=4), Linear(6, draft_bits=4), FixedTree(depth=5, branch=2, draft_bits=4),
            AdaptiveTree(phase=3, draft_bits=4)]
    return {
        "smoke": Plan((HFAssisted(), Linear(4), small, AdaptiveTree(phase=3)), SMOKE_LENGTHS, **SMOKE),
        "session": Plan((*peers, Linear(4), Linear(6), small, *ours, *int4), (128,), prompts=2),
        "full": Plan((*peers, *(Linear(k) for k in range(4, 9)), small, *research, *ours, *int4), (128, 256, 512),
                     prompts=10,
                     repeats=3),
    }


def _length() -> dict[str, Plan]:
    """Throughput over generation length (figure 3)."""
    methods = (HFAssisted(), Linear(6), FixedTree(depth=5, branch=2), AdaptiveTree(phase=3), HFAssisted(draft_bits=4),
               AdaptiveTree(phase=3, draft_bits=4))
    full = (HFAssisted(), Linear(6), Linear(8), FixedTree(depth=5, branch=2),
            FixedTree(depth=8, branch=3, threshold=0.05), AdaptiveTree(phase=3), HFAssisted(draft_bits=4),
            AdaptiveTree(phase=3, draft_bits=4))
    return {
        "smoke": Plan((Linear(4), AdaptiveTree(phase=3)), (4, 8), **SMOKE),
        "session": Plan(methods, (64, 128, 256)),
        "full": Plan(full, (100, 200, 300, 500, 1000), prompts=3, repeats=2),
    }


def _param_search() -> dict[str, Plan]:
    """The fixed tree's depth x branch x threshold grid (figure 5)."""
    return {
        "smoke": Plan(tree_grid((2, 3), (2,), (0.1,)), SMOKE_LENGTHS, **SMOKE),
        "session": Plan(tree_grid((3, 5, 8), (2, 3), (0.03, 0.1)), (24,), prompts=2,
                        note="12 configurations at 24 tokens on 2 prompts; the research's grid is 450"),
        "full": Plan(tree_grid(), LENGTHS, prompts=3),  # the research's grid (bench.grid)
    }


def _ablation_methods(depths) -> tuple:
    methods = []
    for d in depths:
        methods += [FixedTree(depth=d, branch=2)] + [AdaptiveTree(phase=p, base_depth=d) for p in (1, 2, 3)]
    return (*methods, AdaptiveTree(phase=3, pruning=False), AdaptiveTree(phase=3, node_budget=False))


def _ablation() -> dict[str, Plan]:
    """Fixed tree -> phase 1 -> 2 -> 3 at base depth 4/5/6; phase 3 without pruning / without node budget (fig. 6)."""
    return {
        "smoke": Plan((FixedTree(depth=5, branch=2), AdaptiveTree(phase=3), AdaptiveTree(phase=3, pruning=False)),
                      SMOKE_LENGTHS, **SMOKE),
        "session": Plan(_ablation_methods((4, 5, 6)), (24,), note="24 new tokens; the research's ablation ran at 500"),
        "full": Plan(_ablation_methods((4, 5, 6)), (100, 500, 1000), prompts=3),
    }


def _sensitivity_methods(confidences, branch_ranges) -> tuple:
    methods = [AdaptiveTree(phase=3, high_conf=h, low_conf=lo) for h, lo in confidences]
    methods += [AdaptiveTree(phase=3, min_branch=a, default_branch=b, max_branch=c) for a, b, c in branch_ranges]
    return tuple(dict.fromkeys(methods))  # the research default appears in both lists: once


def _sensitivity() -> dict[str, Plan]:
    """The research's adaptive tree's confidence thresholds (high/low) and branch ranges (min/default/max)."""
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
    methods = (Linear(6), AdaptiveTree(phase=3))
    return {
        "smoke": Plan((Linear(4),), SMOKE_LENGTHS, prompt_set="code", prompt_tokens=(16, 32), **SMOKE),
        "session": Plan(methods, (24,), prompt_set="code", prompt_tokens=(50, 200, 500, 1000)),
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
        "session": Plan((Linear(6), AdaptiveTree(phase=3)), (32,), variants=VARIANTS),
        "full": Plan((HFAssisted(), Linear(6), FixedTree(depth=5, branch=2), AdaptiveTree(phase=3)), (128, 500),
                     prompts=5, variants=VARIANTS),
    }


def _quality() -> dict[str, Plan]:
    """float32 exactness (every greedy method's tokens equal AR's) and perplexity of the generations (figure 10)."""
    # The headline's methods too: the default with each draft, the trimmed vocabulary, the planner.
    methods = (HFAssisted(), Linear(6), FixedTree(depth=5, branch=2), AdaptiveTree(phase=3), TopNTree(), HybridTree(),
               PromptLookup(), DynaTree(), DynaTree(draft_bits=4), DynaTree(draft_bits=4, draft_vocab=32768),
               HardwareAware(draft_bits=4))
    return {
        "smoke": Plan((Linear(4), AdaptiveTree(phase=3)), SMOKE_LENGTHS, dtype="float32", **SMOKE),
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


def description(name: str) -> str:
    """The experiment's one-line description."""
    return (EXPERIMENTS[_resolve(name)].__doc__ or "").strip()


def plan(name: str, preset: str = "session") -> Plan:
    """The Plan of one preset of an experiment."""
    file_name(name, preset)  # refuses an unknown experiment or preset
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


__all__ = ['ALIASES', 'COMMAND', 'EXPERIMENTS', 'MissingResults', 'PRESETS', 'Plan', 'SMOKE', 'SMOKE_LENGTHS', 'VARIANTS', 'command', 'description', 'file_name', 'names', 'plan']
