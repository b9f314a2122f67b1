"""The research's reported numbers (/work/shared/RESEARCH_BRIEF.md), as tables the notebooks set ours beside.

Measured on one NVIDIA GPU with Pythia-2.8B (target) and Pythia-70M (draft), fp16, greedy, batch 1. Reference
only: nothing in this package computes them, and none of them is expected to be reproduced on a 2-core CPU with
a Qwen2.5-Coder 1.5B/0.5B pair.
"""
from __future__ import annotations

import pandas as pd

SETUP = "one NVIDIA GPU, Pythia-2.8B target / Pythia-70M draft, fp16, greedy, batch size 1"
# The models' nominal sizes (parameters, embeddings included, as their names give them): the draft/target ratio.
PARAMS = {"target": 2.8e9, "draft": 70e6}

# Fixed tree vs peers, 500 tokens, one prompt.
PEERS_500 = pd.DataFrame(
    [("Tree V2 D=8 B=3 tau=0.03", "FixedTree", 193.4, 1.62),
     ("HF assisted", "HFAssisted", 161.9, 1.36),
     ("Linear K=6", "Linear", 133.1, 1.11),
     ("Streaming K=6 cache=1024", "Streaming", 132.9, 1.11),
     ("AR baseline", "AR", 119.4, 1.00),
     ("Streaming K=6 cache=512", "Streaming", 114.2, 0.96)],
    columns=["method", "family", "tokens_per_s", "speedup"])

TOKENS_PER_ROUND_500 = {"Tree V2 D=8 B=3 tau=0.03": 6.2, "Linear K=6": 4.1}
TREE_PATH_DEPTH_SHARE_500 = 0.686  # accepted path depth / max depth, Tree V2

# Adaptive tree, WikiText-2 prompts, 1000 tokens. HF assisted was reported as approximate (~).
ADAPTIVE_1000 = pd.DataFrame(
    [("AR", "AR", 131.1, 1.00, None, 1.0),
     ("HF assisted", "HFAssisted", 164.0, 1.25, None, 3.0),
     ("Linear K=6", "Linear", 133.1, 1.02, 0.683, 4.10),
     ("Fixed tree D=5 B=2", "FixedTree", 181.3, 1.38, 0.808, 5.65),
     ("Phase 1", "DynaTree-P1", 176.7, 1.35, 0.779, 5.45),
     ("Phase 2", "DynaTree-P2", 206.0, 1.57, 0.896, 6.27),
     ("Phase 3", "DynaTree-P3", 210.8, 1.61, 0.947, 6.63)],
    columns=["method", "family", "tokens_per_s", "speedup", "acceptance", "tokens_per_round"])

# Parameter search: D 3..8 x B 2..4 x tau {0.01, 0.02, 0.03, 0.05, 0.1} x lengths {100, 200, 300, 500, 1000}.
PARAM_BEST = {"depth": 8, "branch": 3, "threshold": 0.03, "max_new_tokens": 500, "speedup": 1.79}
PARAM_BEST_PER_LENGTH = pd.DataFrame({"max_new_tokens": [100, 200, 300, 500, 1000],
                                      "speedup": [1.43, 1.54, 1.60, 1.79, 1.71]})

# Ablation at 500 tokens: phase 3's gain over the fixed tree of the same base depth.
ABLATION_GAIN_500 = pd.DataFrame({"base_depth": [4, 5, 6], "gain": [0.31, 0.06, 0.05]})
SENSITIVITY = {"best_conf": (0.9, 0.4), "best_branch_range": (1, 3), "min_branch_2_loss": 0.18}
ADAPTIVE_GAIN_BY_LENGTH = {100: 0.004, 1000: 0.093}  # adaptive over fixed, scalability 100..1000 tokens

# StreamingLLM and int8.
STREAMING = {"cache_512_at_2000_speedup": 0.32, "cache_2048_at_2000_vs_tree": 1.24}
INT8 = {"memory_saving": 0.42, "speed_range": (0.33, 0.58), "backend": "bitsandbytes LLM.int8()"}


def headline_numbers() -> dict:
    """The research's headline speedups the chapters quote beside their own (for glue): its fixed tree and
    transformers' assisted generation at 500 tokens, its adaptive tree (phase 3) at 1000."""
    peers, adaptive = (t.set_index("method")["speedup"] for t in (PEERS_500, ADAPTIVE_1000))
    return {"r_tree": float(peers["Tree V2 D=8 B=3 tau=0.03"]), "r_hf": float(peers["HF assisted"]),
            "r_phase3": float(adaptive["Phase 3"])}
