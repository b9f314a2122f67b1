"""The decoding loop: `generate(pair, prompt, method, max_new_tokens)` for every method, with stats and a trace.

Speculative methods share one loop: draft a tree, verify it in one target forward, accept the longest greedy path,
commit it plus the bonus token in both caches. A linear draft is the tree with one child per node. With temperature
> 0 the same loop drafts by sampling and accepts by recursive rejection sampling (sampling.py), so every method that
runs on `speculate` samples exactly from the target's distribution.

The loop knows the two small interfaces of core/method.py and no particular method. From `generate` to the draft
model's forward:

    generate -> speculate(run, method.drafter(run)) -> drafter.propose(state, max_depth) -> draft_tree -> forward
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch

from . import kvcache
from .checks import _check_int
from ..models.pair import ModelPair, vocab_size
from ..models.vocab import eos_ids
from .draft import DraftState, commit_draft
from .forward import clock, forward
from .method import Drafter, Method, Speculative
from .sampling import Sampling, accept_sampling, make_sampling
from .tree import root as tree_root
from .verify import accept_greedy, commit_target, verify


@dataclass
class Generation:
    token_ids: list[int]
    text: str | None
    stats: dict
    trace: list[dict] = field(default_factory=list)
    method: object = None
    prompt_ids: list[int] = field(default_factory=list)

    def trace_frame(self):
        import pandas as pd

        return pd.DataFrame(self.trace)


@dataclass
class Run:
    """Per-call state handed to a method's decoder: inputs, the clock, and where the output goes."""

    pair: ModelPair
    prompt_ids: list[int]
    max_new_tokens: int
    eos_ids: set[int]
    start: float = 0.0
    ttft: float | None = None
    tokens: list[int] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # method-specific stats (e.g. draft forwards)
    finished: bool = False
    sampling: Sampling | None = None  # None: greedy

    def next_token(self, logits: torch.Tensor) -> int:
        """The target's next token from one row of its logits: argmax, or a draw when sampling."""
        return int(logits.argmax()) if self.sampling is None else self.sampling.sample(logits)

    def clock(self) -> float:
        return clock(self.pair.device)

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.tokens)

    def emit(self, new_tokens: list[int]) -> bool:
        """Append committed tokens (cut at max_new_tokens or EOS); True when generation is finished."""
        new_tokens = new_tokens[: self.remaining]
        for i, tok in enumerate(new_tokens):
            if tok in self.eos_ids:
                new_tokens = new_tokens[: i + 1]
                self.finished = True
                break
        if self.ttft is None and new_tokens:
            self.ttft = self.clock() - self.start
        self.tokens.extend(new_tokens)
        self.finished = self.finished or self.remaining <= 0
        return self.finished


def generate(pair: ModelPair, prompt, method, max_new_tokens: int, *, stop_at_eos: bool = True,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, chat: bool = False) -> Generation:
    """Generate with `method`. Greedy by default: the tokens equal target-only greedy decoding (up to float
    near-ties). With `temperature` > 0 every token is sampled from the target's distribution processed as in
    transformers (temperature, then `top_k`, then `top_p`), and the output is distributed exactly as target-only
    sampling; `seed` makes a run reproducible (None: fresh randomness).

    `prompt`: text, token ids (a list or a 1-D tensor), or a conversation: a list of messages such as
    [{"role": "system", "content": ...}, {"role": "user", "content": ...}]. A conversation always goes through the
    tokenizer's chat template (with the assistant turn opened: add_generation_prompt=True); `chat=True` does the
    same for a text prompt, as one user message (what an instruct model expects). A tokenizer without a chat
    template is refused."""
    if not isinstance(method, Method):
        raise TypeError(f"unknown decoding method {method!r}: give one of dynatree_lib.methods (Linear(), "
                        f"DynaTree(), ...) or a subclass of core.loop.Method")
    sampling = make_sampling(temperature, top_k, top_p, seed, pair.device)
    prompt_ids = encode(pair, prompt, chat=chat)
    check_inputs(pair, prompt_ids, method, max_new_tokens)
    pair = running_pair(pair, method)
    if sampling is not None and not method.supports_sampling:
        raise ValueError(f"{method.label()} runs transformers' greedy generate; temperature > 0 is not supported")
    eos = eos_ids(pair) if stop_at_eos else set()
    run = Run(pair=pair, prompt_ids=prompt_ids, max_new_tokens=max_new_tokens, eos_ids=eos, sampling=sampling)
    run.start = run.clock()
    with torch.inference_mode():
        if isinstance(method, Speculative):
            speculate(run, method.drafter(run), method.target_cache(), method.draft_context)
        else:
            method.decode(run)
    wall = run.clock() - run.start
    tokens = run.tokens
    text = pair.tokenizer.decode(tokens, skip_special_tokens=False) if pair.tokenizer is not None else None
    return Generation(tokens, text, _stats(run, wall), run.trace, method, prompt_ids)


def running_pair(pair: ModelPair, method) -> ModelPair:
    """The pair `generate` runs `method` on: an int8/int4 and/or vocabulary-trimmed copy of the draft when the method
    asks for one (made once, cached on `pair`). A forward timer must hook this pair's draft, not `pair.draft`."""
    return pair.with_draft(method.draft_bits, method.draft_vocab)


def encode(pair: ModelPair, prompt, chat: bool = False) -> list[int]:
    if isinstance(prompt, str) and not prompt:
        raise ValueError("prompt is empty")
    if chat or is_conversation(prompt):
        return chat_ids(pair, prompt)
    if isinstance(prompt, str):
        if pair.tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer: give ModelPair(tokenizer=...) or pass token ids")
        ids = pair.tokenizer(prompt)["input_ids"]
    elif isinstance(prompt, torch.Tensor):
        if prompt.dim() > 2 or (prompt.dim() == 2 and prompt.shape[0] != 1):
            raise ValueError(f"a tensor prompt must be one sequence, shape (L,) or (1, L), got {tuple(prompt.shape)}: "
                             "batches are not supported, call generate once per prompt")
        if prompt.dtype.is_floating_point or prompt.dtype.is_complex or prompt.dtype == torch.bool:
            raise ValueError(f"a tensor prompt must hold integer token ids, got dtype {prompt.dtype}")
        ids = prompt.flatten().tolist()
    else:
        ids = token_ids(prompt)
    if not ids:
        raise ValueError("prompt is empty (no tokens)")
    return ids


def token_ids(prompt) -> list[int]:
    """A sequence of integer token ids as a list; refuses what int() would silently round or coerce (1.7, "1", True)."""
    try:
        values = list(prompt)
    except TypeError:
        raise ValueError("prompt must be text, a sequence of integer token ids, a tensor of them or a list of "
                         f"messages, got {type(prompt).__name__}") from None
    bad = [t for t in values if isinstance(t, bool) or not isinstance(t, numbers.Integral)]
    if bad:
        raise ValueError(f"prompt token ids must be integers, got {bad[:5]!r}")
    return [int(t) for t in values]


def is_conversation(prompt) -> bool:
    """True for a chat prompt: a list (or tuple) of message dicts."""
    return isinstance(prompt, (list, tuple)) and any(isinstance(m, dict) for m in prompt)


def chat_ids(pair: ModelPair, prompt) -> list[int]:
    """Token ids of a conversation (or of a text prompt as one user message) through the tokenizer's chat template,
    with the assistant turn opened (add_generation_prompt=True)."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif is_conversation(prompt):
        messages = list(prompt)
        if not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise ValueError('a conversation is a list of messages, each a dict with "role" and "content"')
    else:
        raise ValueError("chat=True needs a text prompt or a list of messages, not token ids "
                         f"({type(prompt).__name__}); token ids are used as given, without chat=True")
    tokenizer = pair.tokenizer
    if tokenizer is None:
        raise ValueError("a chat prompt needs a tokenizer with a chat template: give ModelPair(tokenizer=...)")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer of {pair.name or 'this pair'} has no chat template, so chat=True or a list "
                         "of messages cannot be applied: pass plain text, or set tokenizer.chat_template")
    # The template writes every special token itself (BOS, role markers): render text, then tokenize it as is.
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_inputs(pair: ModelPair, prompt_ids: list[int], method, max_new_tokens: int) -> None:
    _check_int("max_new_tokens", max_new_tokens, 1)
    pair.ensure_eval()  # a model put back in training mode after the pair was built
    vocab = vocab_size(pair.target)
    bad = [t for t in prompt_ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"prompt has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
    if method.needs_draft and pair.draft is None:
        raise ValueError(f"{method.label()} needs a draft model, but the pair has none")
    # The draft reads the same positions as the target: drafting stops at max_new_tokens (speculate caps a round's
    # depth at the tokens still wanted), so prompt + max_new_tokens is also the draft's furthest position.
    total = len(prompt_ids) + max_new_tokens
    for role, model in (("target", pair.target), ("draft", pair.draft if method.needs_draft else None)):
        if model is None:
            continue
        context = getattr(model.config, "max_position_embeddings", None)
        if context is not None and total > context:
            raise ValueError(f"prompt ({len(prompt_ids)} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
                             f"{role}'s context of {context} tokens")
        window = kvcache.sliding_window(model) if method.rolls_back_cache else None
        if window is not None and total > window:
            raise ValueError(
                f"the {role} ({model.config.model_type}) uses sliding-window attention with a sliding window of "
                f"{window} tokens, and prompt ({len(prompt_ids)} tokens) plus max_new_tokens ({max_new_tokens}) "
                f"exceeds it: {method.label()} rolls its cache back after each round, which is exact only "
                f"inside the window (Autoregressive and the transformers peers are not limited)"
            )


# ---------------------------------------------------------------------------------------------------------------------
# Speculative decoding: what the loop knows of a method is core.method's interfaces, never a particular class.


def prefill(run: Run, position_ids=None, attention_mask=None) -> tuple[object, int]:
    """Target forward over the prompt: fills its cache and yields the first new token (this is the TTFT). A windowed
    target (streaming.WindowedTarget) passes its positions and mask."""
    target = run.pair.target
    cache = kvcache.new_cache(target)
    ids = torch.tensor([run.prompt_ids], device=target.device)
    first = run.next_token(forward(target, ids, cache, position_ids, attention_mask, logits_to_keep=1)[-1])
    return cache, first


def autoregressive(run: Run) -> None:
    """Target-only decoding, one forward per token: the reference every speculative method must reproduce."""
    cache, token = prefill(run)
    done = run.emit([token])
    target = run.pair.target
    while not done:
        t0 = run.clock()
        logits = forward(target, torch.tensor([[token]], device=target.device), cache, logits_to_keep=1)
        token = run.next_token(logits[-1])
        t1 = run.clock()
        done = run.emit([token])
        run.trace.append(_record(nodes=0, depth=0, accepted=0, committed=1, draft_s=0.0, verify_s=t1 - t0))


class FullContext:
    """The target's cache as `speculate` keeps it: every token stays (streaming.WindowedTarget forgets some)."""

    def prefill(self, run: Run):
        return prefill(run)

    def verify(self, model, cache, tree):
        return verify(model, cache, tree)

    def commit(self, cache, prefix: int, path: list[int]) -> None:
        commit_target(cache, prefix, path)

    def stats(self) -> dict:
        return {}


def speculate(run: Run, drafter: Drafter, kv: FullContext | None = None, draft_context: int | None = None) -> None:
    """Draft -> verify -> accept -> commit until done: `drafter` proposes each round's tree and learns from it, `kv`
    keeps the target's cache (default: full context). The draft reads the prompt's last `draft_context` tokens
    (None: all of it): its guesses may change, never the output, which the target's verification decides."""
    pair = run.pair
    kv = kv or FullContext()
    target_cache, root = kv.prefill(run)
    done = run.emit([root])
    t0 = run.clock()
    read = run.prompt_ids if draft_context is None else run.prompt_ids[-draft_context:]
    draft = DraftState(kvcache.new_cache(pair.draft) if pair.draft is not None else None,
                       pending=list(read) + [root], sampling=run.sampling, vocab=pair.shared_vocab)
    run.extra["draft_forwards"] = 0
    while not done:
        # A round commits at most depth + 1 tokens: never draft past what is still wanted.
        drafted = drafter.propose(draft, run.remaining - 1) if run.remaining > 1 else None
        tree = drafted.tree if drafted else tree_root(root, device=pair.target.device)
        t1 = run.clock()
        prefix = kvcache.cache_len(target_cache)
        if run.sampling is None:
            target_next = kv.verify(pair.target, target_cache, tree).argmax(dim=-1)
            t2 = run.clock()
            path, bonus = accept_greedy(tree, target_next)
        else:
            target_probs = run.sampling.probs(kv.verify(pair.target, target_cache, tree))
            t2 = run.clock()
            samples = drafted.samples if drafted else None
            path, bonus = accept_sampling(tree, target_probs, samples, run.sampling.generator)
        kv.commit(target_cache, prefix, path)
        committed = tree.tokens[path[1:]].tolist() + [bonus]
        if drafted:
            commit_draft(draft, drafted, path, bonus)
            run.extra["draft_forwards"] += drafted.forwards
        elif draft.cache is not None:  # the draft model reads what it skipped before its next tree
            draft.pending = draft.pending + committed
        done = run.emit(committed)
        root = bonus
        t3 = run.clock()
        record = _record(
            nodes=tree.num_draft, depth=tree.max_depth, accepted=len(path) - 1, committed=len(committed),
            draft_s=t1 - t0, verify_s=t2 - t1, commit_s=t3 - t2,
        )
        record.update(drafter.notes())
        run.trace.append(record)
        drafter.learn(record)
        t0 = t3
    run.extra.update(drafter.summary())
    run.extra.update(kv.stats())


def _record(**values) -> dict:
    values.setdefault("commit_s", 0.0)
    values["round_s"] = values["draft_s"] + values["verify_s"] + values["commit_s"]
    return values


# ---------------------------------------------------------------------------------------------------------------------


def round_stats(trace: list[dict]) -> dict:
    """How a run's rounds went, from their records (nodes, depth, accepted, committed): what `generate` reports and
    what a replayed run (bench.replay.Round.record) is summarised by."""
    rounds = len(trace)
    drafted = sum(r["nodes"] for r in trace)
    accepted = sum(r["accepted"] for r in trace)
    deep = [r["accepted"] / r["depth"] for r in trace if r["depth"] > 0]
    return {
        "rounds": rounds,
        "tokens_per_round": (sum(r["committed"] for r in trace) / rounds) if rounds else float("nan"),
        "acceptance_depth": sum(deep) / len(deep) if deep else float("nan"),
        "acceptance_nodes": accepted / drafted if drafted else float("nan"),
        "drafted_nodes": drafted,
        "accepted_nodes": accepted,
    }


def _stats(run: Run, wall: float) -> dict:
    n = len(run.tokens)
    trace = run.trace
    ttft = run.ttft if run.ttft is not None else wall
    stats = {
        "new_tokens": n,
        **round_stats(trace),
        "wall_s": wall,
        "tokens_per_s": n / wall if wall > 0 else float("nan"),
        "ttft_s": ttft,
        "tpot_s": (wall - ttft) / (n - 1) if n > 1 else float("nan"),
        "draft_s": sum(r["draft_s"] for r in trace),
        "verify_s": sum(r["verify_s"] for r in trace),
        "commit_s": sum(r["commit_s"] for r in trace),
    }
    stats.update(run.extra)
    return stats
