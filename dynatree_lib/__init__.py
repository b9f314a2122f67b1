"""DynaTree: exact tree-based speculative decoding, the library under the research book.

Layers, each importing only those above it in this list:
    models/    target/draft pairs, the embedded pair, int8/int4 weights
    core/      tree, mask, kvcache, forward, draft, verify, sampling, loop (generate, speculate): no pandas, no plotly
    planning/  cost curves (calibrate) and tree-shape planning (planner)
    methods/   the decoding methods as frozen dataclasses, each with its drafter (core.method.Drafter) or its own loop
    bench/     the benchmark harness, stored results, experiments, provenance, prompts, quality
    book/      the book's tables, figures, tree views, the research's reference numbers, data notes
"""
from .core.loop import Generation, generate
from .core.method import Drafter, Method, Speculative
from .methods import (AdaptiveTree, Autoregressive, DynaTree, FixedTree, HardwareAware, HFAssisted, HFGenerate,
                      HFPromptLookup, HybridTree, Linear, PlannedTree, PromptLookup, Streaming, TopNTree, label)
from .models.pair import ModelPair, load_pair
from .models.embedded import fetch_embedded
from .models.quant import model_memory_bytes, quantize_draft, quantize_int8


__all__ = [
    "AdaptiveTree",
    "Autoregressive",
    "Drafter",
    "DynaTree",
    "FixedTree",
    "Generation",
    "HFAssisted",
    "HFGenerate",
    "HFPromptLookup",
    "HardwareAware",
    "HybridTree",
    "Linear",
    "Method",
    "ModelPair",
    "PlannedTree",
    "PromptLookup",
    "Speculative",
    "Streaming",
    "TopNTree",
    "fetch_embedded",
    "generate",
    "label",
    "load_pair",
    "model_memory_bytes",
    "quantize_draft",
    "quantize_int8",
]
