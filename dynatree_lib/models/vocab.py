"""A frequency-trimmed draft vocabulary (FR-Spec, Zhao et al., 2025, arXiv:2502.14856).

A small draft with a big vocabulary spends much of each forward in its output layer: Qwen2.5-0.5B's lm_head is
151,936 x 896 = 136M of its 494M parameters. FR-Spec lets the draft score only the K most frequent tokens: the
output layer keeps K rows, the candidates it proposes are mapped back to full token ids, and the target still
verifies over the full vocabulary. Output is therefore unchanged (greedy: token for token; sampling: the draft's
distribution q is scattered into a full-vocabulary tensor that is zero outside the kept set, and rejection sampling
stays exact for any q). Only acceptance can suffer, when the target's next token is outside the kept set.

The ranking (`token_ranking`) comes from, in this order:
1. `ModelPair.vocab_ranking` when set (any ordering of token ids: e.g. counts over the target's own generations);
2. a stored ranking under data/vocab/ whose tokenizer fingerprint matches the pair's tokenizer (see
   data/vocab/SOURCES.md; built by `scripts/build_vocab_ranking.py` from Python's standard library source, never
   from the benchmark prompts);
3. token id order, which for a byte-level BPE vocabulary is the merge order: frequent pieces were merged first.
The special tokens (the tokenizer's and every eos id) are always kept (`keep_ids`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .provenance import data_dir
from .pair import vocab_size
from .quant import Int4Linear, Int8Linear, dequantized

RANKING_FORMAT = 1


# ---------------------------------------------------------------------------------------------------------------------
# The ranking


def tokenizer_fingerprint(tokenizer) -> str:
    """sha1 (12 hex digits) of the tokenizer's token -> id map: a stored ranking is used only by that vocabulary."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:12]


def rank_from_counts(ids, counts, vocab: int) -> torch.Tensor:
    """All `vocab` ids, most frequent first: tokens seen in the corpus by count (ties to the lower id), then the unseen
    ones in id (BPE merge) order, interleaved so that neither source crowds the other out: the ranking alternates
    between the next counted token and the next token in id order, skipping ids already placed. A corpus of one kind
    of text (code) thus cannot push out the common tokens of another (prose) that the tokenizer's merges favour."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    counts = torch.as_tensor(counts, dtype=torch.long)
    order = torch.argsort(-counts * (vocab + 1) + ids)  # count descending, then id ascending (exact in int64)
    sources = (iter(ids[order].tolist()), iter(range(vocab)))
    placed = bytearray(vocab)
    out: list[int] = []
    while len(out) < vocab:
        for source in sources:
            token = next((t for t in source if not placed[t]), None)
            if token is not None:
                out.append(token)
                placed[token] = 1
    return torch.tensor(out, dtype=torch.long)


def stored_rankings() -> list[Path]:
    folder = data_dir() / "vocab"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


_CACHE: dict = {}


def stored_ranking(tokenizer, vocab: int) -> torch.Tensor | None:
    """The ranking stored under data/vocab/ for this tokenizer (matched by fingerprint and size), or None."""
    key = (id(tokenizer), vocab)
    if key in _CACHE:
        return _CACHE[key]
    fingerprint = tokenizer_fingerprint(tokenizer)
    ranking = None
    for path in stored_rankings():
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") == RANKING_FORMAT and meta.get("tokenizer_sha1") == fingerprint \
                and meta.get("vocab_size") == vocab:
            import numpy as np

            with np.load(path.with_suffix(".npz")) as data:
                ranking = rank_from_counts(data["ids"], data["counts"], vocab)
            break
    _CACHE[key] = ranking
    return ranking


def scored_rows(pair) -> int:
    """Token ids both models score: ids at or above this are padding rows of the larger output layer."""
    return min(vocab_size(m) for m in (pair.target, pair.draft) if m is not None)


def token_ranking(pair) -> torch.Tensor:
    """Every token id both models score (`scored_rows`), most frequent first (module docstring: the sources)."""
    vocab = scored_rows(pair)
    explicit = getattr(pair, "vocab_ranking", None)
    if explicit is not None:
        ranking = torch.as_tensor(explicit, dtype=torch.long).flatten().cpu()
        if len(ranking) != vocab or not torch.equal(torch.sort(ranking).values, torch.arange(vocab)):
            raise ValueError(f"vocab_ranking must be a permutation of the {vocab} token ids, got {len(ranking)} ids")
        return ranking
    if pair.tokenizer is not None:
        ranking = stored_ranking(pair.tokenizer, vocab)
        if ranking is not None:
            return ranking
        if vocab > 1000:  # a real vocabulary without its stored ranking: say that the fallback is in use
            warnings.warn(f"no stored vocabulary ranking for {pair.name or 'this pair'} under "
                          f"{data_dir() / 'vocab'}; trimming the draft vocabulary by token id (BPE merge) order")
    return torch.arange(vocab)


def eos_ids(pair) -> set[int]:
    """Every eos id the target's generation config, its config or the tokenizer names."""
    ids = set()
    for source in (pair.target.generation_config, pair.target.config, pair.tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    return ids


def special_ids(pair) -> set[int]:
    """Token ids that a trimmed draft vocabulary always keeps: the tokenizer's special tokens and every eos id."""
    ids = eos_ids(pair)
    if pair.tokenizer is not None:
        ids.update(getattr(pair.tokenizer, "all_special_ids", []))
    return {int(i) for i in ids if i is not None}


def keep_ids(pair, k: int) -> torch.Tensor:
    """The `k` token ids a trimmed draft scores, ascending: the special tokens, then the best ranked."""
    vocab = scored_rows(pair)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"draft_vocab must be an integer >= 1, got {k!r}")
    if k > vocab:
        raise ValueError(f"draft_vocab={k} exceeds the vocabulary of {vocab} tokens")
    special = sorted(i for i in special_ids(pair) if 0 <= i < vocab)
    if k < len(special):
        raise ValueError(f"draft_vocab={k} is smaller than the {len(special)} special tokens it must keep")
    ranking = token_ranking(pair)
    rest = ranking[~torch.isin(ranking, torch.tensor(special, dtype=torch.long))][: k - len(special)]
    return torch.sort(torch.cat([torch.tensor(special, dtype=torch.long), rest])).values


# ---------------------------------------------------------------------------------------------------------------------
# The trimmed draft


def _slice_head(head: nn.Module, keep: torch.Tensor) -> nn.Module:
    rows = keep.to(head.weight.device)
    if isinstance(head, Int8Linear):  # per-output-channel scales: slicing rows is exact
        bias = None if head.bias is None else head.bias[rows].clone()
        return Int8Linear(head.weight[rows].clone(), head.scales[rows].clone(), bias)
    dense = head if isinstance(head, nn.Linear) else dequantized(head)
    linear = nn.Linear(dense.in_features, len(keep), bias=dense.bias is not None, dtype=dense.weight.dtype,
                       device=dense.weight.device)
    linear.weight.data = dense.weight.detach()[rows].clone()
    if dense.bias is not None:
        linear.bias.data = dense.bias.detach()[rows].clone()
    linear.requires_grad_(False)
    if isinstance(head, Int4Linear):  # back to int4 (re-quantizing int4 values is near-lossless); else int8
        group = head.group_size
        return Int4Linear.from_linear(linear, group) if Int4Linear.supports(linear, group) \
            else Int8Linear.from_linear(linear)
    return linear


def trim_draft_vocab(model, keep) -> nn.Module:
    """A copy of the draft `model` whose output layer scores only the token ids `keep` (its row i is token keep[i]).

    The input embeddings stay whole (the draft still reads every token; a tied output layer is untied). The id map
    is the non-persistent buffer `model.kept_ids` (LongTensor, ascending), and `model.full_vocab_size` is the size
    of the vocabulary the ids index. Works on a float, int8 or int4 output layer; trimming before quantizing
    (ModelPair.with_draft does) keeps the int4 codes those rows would have had anyway."""
    full = vocab_size(model)
    keep = torch.as_tensor(keep, dtype=torch.long).flatten().cpu()
    if keep.numel() == 0:
        raise ValueError("keep must hold at least one token id")
    keep = torch.sort(keep).values
    if int(keep[0]) < 0 or int(keep[-1]) >= full or bool((keep[1:] == keep[:-1]).any()):
        raise ValueError(f"keep must hold distinct token ids in [0, {full})")
    old = getattr(model, "kept_ids", None)
    if old is not None:  # trimming a trimmed draft: keep must be a subset of what it scores
        old = old.cpu()
        if not bool(torch.isin(keep, old).all()):
            raise ValueError("this draft is already trimmed; keep must be a subset of its draft_vocab")
        rows = torch.searchsorted(old, keep)
    else:
        rows = keep
    # Copy everything but the output layer (a tied one shares the input embedding, which is copied with the rest).
    trimmed = copy.deepcopy(model)
    trimmed.set_output_embeddings(_slice_head(trimmed.get_output_embeddings(), rows))
    trimmed.config.tie_word_embeddings = False  # never re-tie the K-row head to the full input embedding
    device = next(trimmed.parameters()).device
    trimmed.register_buffer("kept_ids", keep.to(device), persistent=False)
    trimmed.full_vocab_size = int(full)
    return trimmed


def full_probs(model, probs: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """A distribution over the trimmed draft's output as one over the whole vocabulary (zero outside the kept ids),
    so that rejection sampling compares it with the target's token for token; `size` columns (default: the draft's
    full vocabulary; the kept ids are below both models' row counts)."""
    ids = getattr(model, "kept_ids", None)
    if ids is None:
        return probs
    out = probs.new_zeros(*probs.shape[:-1], size or model.full_vocab_size)
    return out.index_copy_(-1, ids.to(probs.device), probs)
