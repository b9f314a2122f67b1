"""What the decoding loop (core.loop) knows of a method: two small interfaces, no particular class.

A `Method` either runs its own loop (`decode(run)`: plain decoding, transformers' peers) or is `Speculative`: its
`drafter(run)` is one generation's `Drafter`, which proposes each round's tree and hears how it went (as
transformers' candidate generators do), and `speculate` does the rest.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .draft import DraftState, Drafted

if TYPE_CHECKING:
    from .loop import Run


class Method:
    """A decoding method: pure configuration (subclasses are frozen dataclasses, validated at construction). The
    class attributes say what `generate` must check: whether it needs the pair's draft model, whether it can sample,
    and whether it rolls its caches back after a round (exact on sliding-window models only inside the window).
    `draft_bits` / `draft_vocab`: the draft copy it runs on (ModelPair.with_draft); `draft_context`: how many of
    the prompt's last tokens the draft reads (None: all); methods that offer them declare them as fields. A method
    with its own loop (plain decoding, transformers' peers) defines `decode(run)`."""

    needs_draft: ClassVar[bool] = False
    supports_sampling: ClassVar[bool] = True
    rolls_back_cache: ClassVar[bool] = True
    draft_bits = None
    draft_vocab = None
    draft_context = None

    def label(self) -> str:
        return type(self).__name__

    def decode(self, run: "Run") -> None:
        raise NotImplementedError(f"{self.label()} defines neither decode(run) nor drafter(run)")


class Drafter:
    """One generation's proposer (the state of one `generate` call; the method itself stays frozen):
    `propose(state, max_depth)` drafts this round's tree below the root `state.pending[-1]`, at most `max_depth`
    levels (None: no proposal, the round is a plain target step); `notes()` what this round's proposal decided,
    added to its trace record; `learn(record)` hears how the round went; `summary()` what the generation learned,
    added to its stats."""

    def propose(self, state: DraftState, max_depth: int) -> Drafted | None:
        return None

    def notes(self) -> dict:
        return {}

    def learn(self, record: dict) -> None:
        pass

    def summary(self) -> dict:
        return {}


class Speculative(Method):
    """A method that drafts for `speculate`: `drafter(run)` is a fresh Drafter for one generation;
    `target_cache()` how the target's cache is kept (streaming.Streaming windows it)."""

    needs_draft: ClassVar[bool] = True

    def drafter(self, run: "Run") -> Drafter:
        raise NotImplementedError

    def target_cache(self):
        """How speculate keeps the target's cache: None is full context (loop.FullContext)."""
        return None
