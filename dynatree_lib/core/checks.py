"""Argument checks shared by every layer: a bad parameter fails where it was written, with its name in the error."""
from __future__ import annotations


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_prob(name: str, value, *, allow_one: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and (
        value <= 1 if allow_one else value < 1
    )
    if not ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must be a probability in {interval}, got {value!r}")


def _check_draft_bits(value) -> None:
    if value not in (None, 4, 8):
        raise ValueError(f"draft_bits must be None, 8 or 4, got {value!r}")


def _check_draft_options(draft_bits, draft_vocab) -> None:
    """The draft options every speculative method takes: `draft_bits` (an int8/int4 weight copy of the draft) and
    `draft_vocab` (the draft scores only the K most frequent tokens)."""
    _check_draft_bits(draft_bits)
    if draft_vocab is not None and (not isinstance(draft_vocab, int) or isinstance(draft_vocab, bool)
                                    or draft_vocab < 16):
        raise ValueError(f"draft_vocab must be None (the full vocabulary) or an integer >= 16 (the number of "
                         f"tokens the draft scores), got {draft_vocab!r}")
