"""Peers from transformers itself: assisted generation and prompt-lookup decoding, run through `model.generate`.

They are baselines, so they run exactly as a transformers user would run them; the only additions are a forward
hook that counts target forwards (rounds) and a streamer that timestamps the first new token (TTFT).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from ..core.checks import _check_draft_bits, _check_int
from ..core.loop import Run
from ..core.method import Method
from .base import renamed


class _FirstTokenClock:
    """A minimal streamer: `generate` calls put() with the prompt first, then with new tokens."""

    def __init__(self, run: Run):
        self.run, self.calls = run, 0

    def put(self, value):
        self.calls += 1
        if self.calls == 2 and self.run.ttft is None:
            self.run.ttft = self.run.clock() - self.run.start

    def end(self):
        pass


@contextmanager
def _generation_config(model, config: GenerationConfig):
    """`model.generation_config` is `config` for one call, then the model's own again. Swapped on the model rather
    than passed, because generate fills every None in a passed GenerationConfig from the model's own."""
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


def _plain_greedy(model, eos_ids, **settings):
    """The target's generation_config for one call: plain greedy decoding with no logits processor (the model's
    repetition_penalty, no_repeat_ngram_size, min_new_tokens, bad_words_ids... would change the output), EOS as
    `eos_ids` (None switches it off). The assistant's config is left alone: its draft-length settings are the
    baseline's, and what it proposes never changes the output (`settings`: extra fields, for a target that is its
    own assistant)."""
    return _generation_config(model, GenerationConfig(do_sample=False, num_beams=1,
                                                      eos_token_id=sorted(eos_ids) if eos_ids else None, **settings))


def _hf_generate(run: Run, settings: dict | None = None, **kwargs) -> None:
    target = run.pair.target
    forwards = []
    hook = target.register_forward_hook(lambda *_: forwards.append(1))
    ids = torch.tensor([run.prompt_ids], device=target.device)
    pad = run.pair.tokenizer.pad_token_id if run.pair.tokenizer is not None else None
    try:
        with _plain_greedy(target, run.eos_ids, **(settings or {})):
            out = target.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=run.max_new_tokens,
                do_sample=False,
                pad_token_id=pad if pad is not None else 0,
                streamer=_FirstTokenClock(run),
                **kwargs,
            )
    finally:
        hook.remove()
    new = out[0, len(run.prompt_ids):].tolist()
    run.tokens.extend(new)
    # Assisted generation verifies its first candidates in the same forward that reads the prompt, so every target
    # forward is a round; generate exposes no per-round events, so the trace stays empty.
    rounds = len(forwards)
    run.extra.update(target_forwards=rounds, rounds=rounds,
                     tokens_per_round=len(new) / rounds if rounds else float("nan"))


class _Transformers(Method):
    """A peer that runs transformers' own greedy loop: it cannot sample, and transformers handles its caches."""

    supports_sampling = False
    rolls_back_cache = False


@dataclass(frozen=True)
class HFAssisted(_Transformers):
    """transformers' own assisted generation (`generate(..., assistant_model=draft)`), with its default
    dynamic draft-length schedule unless `num_assistant_tokens` is given."""

    num_assistant_tokens: int | None = None
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft (ModelPair.with_draft)
    needs_draft = True

    def __post_init__(self):
        _check_draft_bits(self.draft_bits)
        if self.num_assistant_tokens is not None:
            _check_int("num_assistant_tokens", self.num_assistant_tokens, 1)

    def decode(self, run: Run) -> None:
        # transformers 5 takes the draft length from the assistant's own generation_config (num_assistant_tokens
        # passed to generate is ignored) and its "heuristic" schedule writes back into it: a copy per call, restored
        # after.
        draft = run.pair.draft
        settings = {} if self.num_assistant_tokens is None else {
            "num_assistant_tokens": self.num_assistant_tokens, "num_assistant_tokens_schedule": "constant"}
        config = copy.deepcopy(draft.generation_config)
        for key, value in settings.items():
            setattr(config, key, value)
        with _generation_config(draft, config):
            _hf_generate(run, settings if draft is run.pair.target else None, assistant_model=draft)


@renamed(num_tokens="k")
@dataclass(frozen=True)
class HFPromptLookup(_Transformers):
    """transformers' own prompt-lookup decoding (`generate(..., prompt_lookup_num_tokens=...)`): drafts are copied
    from n-gram matches in the context, no draft model. `k`: tokens proposed per round (transformers'
    prompt_lookup_num_tokens; was `num_tokens`)."""

    k: int = 10
    max_ngram: int = 2

    def __post_init__(self):
        _check_int("k", self.k, 1)
        _check_int("max_ngram", self.max_ngram, 1)

    def decode(self, run: Run) -> None:
        _hf_generate(run, prompt_lookup_num_tokens=self.k, max_matching_ngram_size=self.max_ngram)


@dataclass(frozen=True)
class HFGenerate(_Transformers):
    """transformers' own greedy `generate` on the target alone: the plain-decoding baseline a transformers user
    knows. Benchmarks that run it divide by the faster of it and Autoregressive (bench.harness)."""

    def decode(self, run: Run) -> None:
        _hf_generate(run)
