"""Prompt sets for the experiments, read from data/prompts/ (made by scripts/make_prompts.py).

Sets: "humaneval" (code), "prose" (Shakespeare, PG-19 stand-in), "technical" (CPython docs,
WikiText-2 stand-in). `prompt_of_length` cuts long stored texts to an exact token count, since
token counts depend on the tokenizer and cannot be stored. See data/prompts/SOURCES.md.
"""
from __future__ import annotations

import json
import numbers

import pandas as pd

from ..models.provenance import data_dir

PROMPT_SETS = ("humaneval", "prose", "technical")
LONG_KINDS = ("prose", "technical", "code")


def _read_jsonl(name: str) -> list[dict]:
    path = data_dir() / "prompts" / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; run `python scripts/make_prompts.py` or set DYNATREE_DATA")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_prompts(name: str, n: int | None = None) -> pd.DataFrame:
    """The first `n` prompts (all if None) of a set, as columns id, text, source plus set-specific ones.

    Asking for more rows than exist is an error rather than a silent short result, so a study
    never reports "n=200" while having run on 164 prompts.
    """
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; valid: {', '.join(PROMPT_SETS)}")
    rows = _read_jsonl(name)
    if n is not None:
        if n < 1 or n > len(rows):
            raise ValueError(f"n={n} out of range for {name!r}: must be 1..{len(rows)} or None")
        rows = rows[:n]
    # Built from dicts, not pd.read_json, so no column is type-guessed (ids stay strings).
    df = pd.DataFrame(rows)
    first = ["id", "text", "source"]
    return df[first + [c for c in df.columns if c not in first]]

# The speed table's held-out prompts: four HumanEval problems, three prose and three technical passages, after the
# first ten of each set (which tuning used). goal.py, llama_cpp.py and flips.py measure on them.
SPEED_SETS, SPEED_SKIP = "humaneval:4,prose:3,technical:3", 10


def prompt_sets(spec: str, skip: int = 0) -> pd.DataFrame:
    """Prompts from several sets, as columns id, text and kind (the set): "humaneval:4,prose:3" takes 4 HumanEval and
    3 prose prompts ("prose" alone: all of them), after the first `skip` of each set (prompts that tuning looked at
    can be left out)."""
    frames = []
    for item in spec.split(","):
        name, _, count = (part.strip() for part in item.partition(":"))
        rows = load_prompts(name, skip + int(count) if count else None).iloc[skip:]
        frames.append(rows.assign(kind=name)[["id", "text", "kind"]])
    return pd.concat(frames, ignore_index=True)


def _long_text(kind: str, index: int) -> str:
    texts = [r for r in _read_jsonl("long_texts") if r["kind"] == kind]
    if not 0 <= index < len(texts):
        raise ValueError(f"index={index} out of range for source {kind!r}: must be 0..{len(texts) - 1}")
    return texts[index]["text"]


def prompt_of_length(tokenizer, n_tokens: int, source: str = "prose", index: int = 0) -> list[int]:
    """Exactly `n_tokens` token ids: the first n_tokens of stored long text `index` of `source`.

    source is one of "prose", "technical", "code". The whole text is tokenized (transformers' `encode`, without
    special tokens: BOS etc. are the caller's choice, model by model), then cut, so the ids are those the tokenizer
    gives in context (cutting the text first could split a token).
    """
    if source not in LONG_KINDS:
        raise ValueError(f"unknown source {source!r}; valid: {', '.join(LONG_KINDS)}")
    if not isinstance(n_tokens, numbers.Integral) or isinstance(n_tokens, bool) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive int, got {n_tokens!r}")
    ids = tokenizer.encode(_long_text(source, index), add_special_tokens=False)
    if len(ids) < n_tokens:
        raise ValueError(f"stored {source!r} text {index} is only {len(ids)} tokens with this tokenizer, "
                         f"fewer than n_tokens={n_tokens}; use a smaller n_tokens or store longer texts")
    return ids[:int(n_tokens)]
