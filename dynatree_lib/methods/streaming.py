"""StreamingLLM for the target: attention sinks plus a recent window, under any method that decodes via `speculate`.

`Streaming(method, cache_size, sink_tokens)` decodes like `method` while the target attends, at every position p,
only to the `sink_tokens` first tokens of the sequence and to the `cache_size - sink_tokens` most recent positions up
to and including p. That sentence is the policy, and it is defined per query position so that it means the same
thing for one token (autoregressive) and for a whole tree verified at once: a tree node at position p sees the sinks,
the committed tokens inside its own window, and those of its ancestors inside it. Greedy output is therefore exactly
that of target-only greedy decoding *under the same policy* (not of full-context decoding: forgetting changes what the
model says). tests/test_streaming.py checks it token for token against a one-token-at-a-time loop over a full cache.

Memory is bounded physically as well: when the cache holds more than `cache_size + slack` tokens, every token that no
future query can see is evicted in one go (a "compression", counted in `stats["kv_compressions"]`, with the evicted
tokens in `stats["kv_evicted_tokens"]`). Between compressions the mask hides what the policy forbids, so when the
eviction happens has no effect on the output; the slack only amortises the copying.

Positions. Keys keep the position they were computed at (transformers caches keys after the rotary embedding), so
nothing is re-rotated when tokens are evicted and tree positions stay prefix-length-plus-depth. The StreamingLLM
paper (Xiao et al., 2024) instead re-indexes positions inside the cache (the sinks are 0..3, the window follows
contiguously), which keeps every query-key distance below the cache size and is what lets it stream far past the
trained context; that needs the pre-rotary keys and a re-rotation each step. Here the distance to the sinks grows
with the text, so this does not extend the context (`generate` still refuses more than the model's positions): it
bounds the KV memory and the attention cost per token, which is what the research measured.

Draft. The draft model keeps its full-context cache: what it proposes never changes the output (the target checks
every token), so windowing it would only change acceptance. Its memory therefore still grows with the text.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import kvcache
from ..core.checks import _check_int
from ..core.loop import FullContext, Run, prefill
from ..core.method import Drafter, Speculative
from ..core.mask import tree_attention_mask
from ..core.tree import Tree
from ..core.verify import commit_target, verify
from .base import Autoregressive


@dataclass(frozen=True)
class Streaming(Speculative):
    """Decode with `method` while the target keeps a StreamingLLM cache: `sink_tokens` attention sinks plus the
    most recent `cache_size - sink_tokens` tokens. The cache is compressed when it exceeds `cache_size + slack`
    (default `cache_size // 8`)."""

    method: Speculative | Autoregressive
    cache_size: int = 1024
    sink_tokens: int = 4
    slack: int | None = None

    def __post_init__(self):
        if not isinstance(self.method, (Speculative, Autoregressive)) or isinstance(self.method, Streaming):
            raise ValueError(
                f"method must be a method instance decoded by speculate (Autoregressive, Linear, FixedTree, ...), "
                f"got {self.method!r}: transformers' own loops and nested Streaming cannot be windowed"
            )
        _check_int("cache_size", self.cache_size, 1)
        _check_int("sink_tokens", self.sink_tokens, 0)
        if self.sink_tokens >= self.cache_size:
            raise ValueError(f"sink_tokens must be smaller than cache_size ({self.cache_size}) to leave room for a "
                             f"recent window, got {self.sink_tokens}")
        if self.slack is not None:
            _check_int("slack", self.slack, 0)

    @property
    def window(self) -> int:
        """Recent positions a query sees, itself included."""
        return self.cache_size - self.sink_tokens

    @property
    def evict_slack(self) -> int:
        return self.cache_size // 8 if self.slack is None else self.slack

    @property
    def needs_draft(self) -> bool:
        return self.method.needs_draft

    @property
    def supports_sampling(self) -> bool:
        return self.method.supports_sampling

    @property
    def draft_bits(self):
        return self.method.draft_bits  # the draft copy the windowed method drafts with

    @property
    def draft_vocab(self):
        return self.method.draft_vocab

    @property
    def draft_context(self):
        return self.method.draft_context

    def drafter(self, run: Run) -> Drafter:
        # plain decoding under the policy: every round is one target step, nothing is proposed
        return Drafter() if isinstance(self.method, Autoregressive) else self.method.drafter(run)

    def target_cache(self) -> "WindowedTarget":
        return WindowedTarget(self)


def visible(query_pos: torch.Tensor, key_pos: torch.Tensor, sink_tokens: int, window: int) -> torch.Tensor:
    """(q, k) bool: may a query at `query_pos[q]` attend to the key at `key_pos[k]` under the streaming policy."""
    q, k = query_pos.unsqueeze(1), key_pos.unsqueeze(0)
    return (k <= q) & ((k < sink_tokens) | (k > q - window))


class WindowedTarget(FullContext):
    """The target's cache under a `Streaming` policy, in the shape `speculate` asks of it: prefill / verify /
    commit, plus the absolute position of every cache slot."""

    def __init__(self, policy: Streaming):
        self.policy = policy
        self.positions: torch.Tensor | None = None  # (cache_len,) long, increasing
        self.next = 0  # position of the next token to process (the root of the coming round)
        self.compressions = 0
        self.evicted = 0
        self.peak = 0  # most slots ever in the cache, tree nodes under verification included

    def _visible(self, query_pos, key_pos):
        return visible(query_pos, key_pos, self.policy.sink_tokens, self.policy.window)

    @torch.no_grad()
    def prefill(self, run: Run):
        target = run.pair.target
        pos = torch.arange(len(run.prompt_ids), device=target.device)
        mask = tree_attention_mask(self._visible(pos, pos), 0, target.dtype)  # a windowed causal mask
        cache, first = prefill(run, pos.unsqueeze(0), mask)
        self.positions, self.next = pos, len(run.prompt_ids)
        self.peak = len(pos)
        self._compress(cache)
        return cache, first

    def verify(self, model, cache, tree: Tree) -> torch.Tensor:
        pos = self.next + tree.depth
        self.peak = max(self.peak, kvcache.cache_len(cache) + len(tree))
        return verify(model, cache, tree, pos, tree.ancestors & self._visible(pos, pos),
                      self._visible(pos, self.positions))

    def commit(self, cache, prefix: int, path: list[int]) -> None:
        commit_target(cache, prefix, path)
        new = torch.arange(self.next, self.next + len(path), device=self.positions.device)  # path depths are 0..k
        self.positions = torch.cat([self.positions, new])
        self.next += len(path)
        self._compress(cache)

    def _compress(self, cache) -> None:
        """Evict every token no future query can see, once the cache is over budget by more than the slack."""
        length = self.positions.shape[0]
        if length <= self.policy.cache_size + self.policy.evict_slack:
            return
        sinks = self.positions < self.policy.sink_tokens  # always the first slots: positions increase
        keep = sinks | (self.positions > self.next - self.policy.window)
        slots = torch.nonzero(keep).flatten().tolist()
        n_sinks = int(sinks.sum())
        kvcache.keep(cache, n_sinks, slots[n_sinks:])
        self.positions = self.positions[keep]
        self.compressions += 1
        self.evicted += length - len(slots)

    def stats(self) -> dict:
        return {"kv_compressions": self.compressions, "kv_evicted_tokens": self.evicted, "kv_peak_slots": self.peak,
                "kv_cache_size": self.policy.cache_size}
