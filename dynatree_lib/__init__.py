"""DynaTree: exact tree-based speculative decoding, the library under the research book."""
from .decoding import Generation, decode, generate
from .methods import Autoregressive, FixedTree, HFAssisted, HFPromptLookup, Linear, label
from .models import ModelPair
from . import hf_assisted  # noqa: F401  (registers the HFAssisted decoder)

__all__ = [
    "Autoregressive",
    "FixedTree",
    "Generation",
    "HFAssisted",
    "HFPromptLookup",
    "Linear",
    "ModelPair",
    "decode",
    "generate",
    "label",
]
