"""The decoding methods: frozen dataclasses (pure configuration), each with the drafter or loop that runs it."""
from .base import (Autoregressive, FixedTree, Linear, TreeDrafter, label, method_from_row, upgrade_kwargs,
                   upgrade_record)
from .hf import HFAssisted, HFGenerate, HFPromptLookup
from .adaptive import AdaptiveTree
from .confidence import DynaTree
from .topn import TopNTree
from .ngram import HybridTree, PromptLookup
from .streaming import Streaming
from .hardware import HardwareAware, PlannedTree

__all__ = ["AdaptiveTree", "Autoregressive", "DynaTree", "FixedTree", "HFAssisted", "HFGenerate", "HFPromptLookup",
           "HardwareAware", "HybridTree", "Linear", "PlannedTree", "PromptLookup", "Streaming", "TopNTree",
           "TreeDrafter", "label", "method_from_row", "upgrade_kwargs", "upgrade_record"]
