"""Peers from transformers itself: assisted generation and prompt-lookup decoding, run through `model.generate`.

They are baselines, so they run exactly as a transformers user would run them; the only additions are a forward
hook that counts target forwards (rounds) and a streamer that timestamps the first new token (TTFT).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..core.loop import Run, decode
from .base import HFAssisted, HFPromptLookup


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
def _generation_eos(model, eos_ids):
    # None in a passed GenerationConfig means "use the model's default", so EOS is switched off on the model itself.
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = sorted(eos_ids) if eos_ids else None
    try:
        yield
    finally:
        model.generation_config.eos_token_id = saved


def _hf_generate(run: Run, **kwargs) -> None:
    target = run.pair.target
    forwards = []
    hook = target.register_forward_hook(lambda *_: forwards.append(1))
    ids = torch.tensor([run.prompt_ids], device=target.device)
    pad = run.pair.tokenizer.pad_token_id if run.pair.tokenizer is not None else None
    try:
        with _generation_eos(target, run.eos_ids):
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


@decode.register
def _(method: HFAssisted, run: Run) -> None:
    kwargs = {"assistant_model": run.pair.draft}
    if method.num_assistant_tokens is not None:
        kwargs.update(num_assistant_tokens=method.num_assistant_tokens, num_assistant_tokens_schedule="constant")
    _hf_generate(run, **kwargs)


@decode.register
def _(method: HFPromptLookup, run: Run) -> None:
    _hf_generate(run, prompt_lookup_num_tokens=method.num_tokens, max_matching_ngram_size=method.max_ngram)
