"""The decoding methods: frozen dataclasses (pure configuration) and the drafters that run them."""
from .base import Autoregressive, FixedTree, HFAssisted, HFPromptLookup, Linear, TreePolicy, drafter, label, policy
from . import fixed  # noqa: F401  (registers the decoders of the fixed policies)
from .hf import HFGenerate
from .adaptive import DynaTree
from .topn import TopNTree
from .ngram import HybridTree, PromptLookup
from .streaming import Streaming
from .hardware import HardwareAware

__all__ = ["Autoregressive", "DynaTree", "FixedTree", "HFAssisted", "HFGenerate", "HFPromptLookup", "HardwareAware", "HybridTree",
           "Linear", "PromptLookup", "Streaming", "TopNTree", "TreePolicy", "drafter", "label", "policy"]
