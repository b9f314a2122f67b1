"""DynaTree: exact tree-based speculative decoding, the library under the research book."""
from .decoding import Generation, decode, generate
from .methods import Autoregressive, FixedTree, HFAssisted, HFPromptLookup, Linear, label
from .models import ModelPair, fetch_embedded, load_pair
from . import hf_assisted  # noqa: F401  (registers the HFAssisted decoder)
from .adaptive import DynaTree
from .ngram import HybridTree, PromptLookup
from .topn import TopNTree
from .streaming import Streaming
from .quant import model_memory_bytes, quantize_draft, quantize_int8
from .costmodel import HardwareAware

__all__ = [
    "Autoregressive",
    "DynaTree",
    "FixedTree",
    "Generation",
    "HFAssisted",
    "HFPromptLookup",
    "HardwareAware",
    "HybridTree",
    "Linear",
    "ModelPair",
    "PromptLookup",
    "Streaming",
    "TopNTree",
    "decode",
    "fetch_embedded",
    "generate",
    "label",
    "load_pair",
    "model_memory_bytes",
    "quantize_draft",
    "quantize_int8",
]
