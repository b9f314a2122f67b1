"""What batching the grid's acceptance work buys on this machine (bench.replay: greedy_continuations and
SupersetDrafter(batch=...)), measured as a sweep's Ray worker runs it: one torch thread, one process.

    python benchmarks/grid_batching.py [--prompts humaneval:4] [--tokens 64] [--replay-tokens 100]
                                       [--target-batches 1,2,4] [--replay-batches 1,8,32] [--drafts int4,base]
                                       [--out data/results/grid_batching.csv]

1. Target units: the target's greedy continuation of `--tokens` tokens for each prompt, one prompt at a time
   (batch 1) and as left-padded batches; seconds per prompt and token, and whether every batched continuation equals
   the one-at-a-time one (bf16 can flip a near-tie).
2. Replay units: every superset the grid's policies (bench.grid.grid_methods) reach on the first prompt's
   continuation of `--replay-tokens` tokens, drafted one start at a time and `batch` starts at a time; seconds per
   token, draft forwards, supersets drafted against those the policies asked for, how many of the grid's
   replayed runs are identical to the one-at-a-time replay, and how far the others' tokens per round and drafted
   nodes moved (relative to the one-at-a-time replay's; bf16 rounding can move a node across a threshold).
   In batches an int4/int8 draft drafts through its dense copy, as a sweep does (bench.grid.replay_draft).

Rows carry provenance (git state, versions, CPU, threads, load average before/after each measurement). The batch
sizes a sweep uses by default (bench.grid.TARGET_BATCH, REPLAY_BATCH) come from this table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dynatree_lib import load_pair  # noqa: E402
from dynatree_lib.bench.harness import load_1m  # noqa: E402
from dynatree_lib.bench.grid import DRAFT_BITS, grid_methods, replay_draft  # noqa: E402
from dynatree_lib.bench.replay import Replay, replay_grid  # noqa: E402
from dynatree_lib.bench.supersets import SupersetDrafter, greedy_continuation, greedy_continuations  # noqa: E402
from dynatree_lib.core.loop import encode  # noqa: E402
from dynatree_lib.models.provenance import provenance, write_table  # noqa: E402
from grid import _ints, prompts_of  # noqa: E402


def target_rows(pair, prompts, n: int, batches) -> list[dict]:
    ids = [encode(pair, text) for _, text in prompts]
    rows, reference = [], None
    for batch in tqdm(batches, desc="target batches"):
        load, t0, tokens = load_1m(), time.perf_counter(), []
        for i in range(0, len(ids), batch):
            tokens += greedy_continuations(pair, ids[i: i + batch], n)
        seconds = time.perf_counter() - t0
        reference = reference or tokens
        rows.append({"measure": "target", "draft": "", "batch": batch, "prompts": len(ids), "tokens": n,
                     "seconds": seconds, "s_per_token": seconds / (n * len(ids)),
                     "equal_share": sum(a == b for a, b in zip(tokens, reference)) / len(ids),
                     "load_1m_before": load, "load_1m_after": load_1m()})
    return rows


def _tokens_per_round(rounds) -> float:
    return sum(r.committed for r in rounds) / len(rounds)


def replay_rows(pair, prompt, n: int, name: str, batches) -> list[dict]:
    ids = encode(pair, prompt)
    target = greedy_continuation(pair, ids, n)
    running = pair.with_draft_bits(DRAFT_BITS[name])
    methods, rows, reference = grid_methods(), [], None
    for batch in tqdm(batches, desc=f"replay batches ({name})"):
        draft = replay_draft(running, batch)  # as a sweep drafts: a quantized draft's dense copy in batches
        drafter = SupersetDrafter(draft, ids, target, None, running.shared_vocab, batch)
        replay = Replay(ids, target, drafter=drafter)
        load, t0 = load_1m(), time.perf_counter()
        runs = replay_grid(replay, methods, [n])
        seconds = time.perf_counter() - t0
        reference = reference or runs
        # a bf16 near-tie (a node's cumulative probability at a threshold) changes one round of a run, so besides
        # identical runs, how far each run's tokens per round and drafted nodes move, and in which direction
        tpr = pd.Series({k: _tokens_per_round(runs[k]) / _tokens_per_round(reference[k]) - 1 for k in runs})
        nodes = pd.Series({k: sum(r.nodes for r in runs[k]) / max(sum(r.nodes for r in reference[k]), 1) - 1
                           for k in runs})
        rows.append({"measure": "replay", "draft": name, "dense_draft": draft is not running.draft, "batch": batch,
                     "prompts": 1, "tokens": n,
                     "seconds": seconds, "s_per_token": seconds / n, "draft_forwards": drafter.forwards,
                     "drafted_starts": drafter.drafted, "asked_starts": len(replay.supersets),
                     "superset_nodes": drafter.nodes,
                     "equal_share": sum(runs[k] == reference[k] for k in runs) / len(runs),
                     "tokens_per_round_abs_diff_median": tpr.abs().median(), "tokens_per_round_diff_mean": tpr.mean(),
                     "tokens_per_round_abs_diff_max": tpr.abs().max(), "nodes_abs_diff_median": nodes.abs().median(),
                     "nodes_diff_mean": nodes.mean(), "load_1m_before": load, "load_1m_after": load_1m()})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="embedded")
    p.add_argument("--prompts", default="humaneval:4")
    p.add_argument("--tokens", type=int, default=64, help="target continuation length (default: %(default)s)")
    p.add_argument("--replay-tokens", type=int, default=100, help="replay unit length (default: %(default)s)")
    p.add_argument("--target-batches", default="1,2,4")
    p.add_argument("--replay-batches", default="1,8,32")
    p.add_argument("--drafts", default="int4,base")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as a sweep's worker (default: 1)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data/results/grid_batching.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pair = load_pair(args.pair)
    prompts = prompts_of(args.prompts)
    rows = target_rows(pair, prompts, args.tokens, _ints(args.target_batches))
    for draft in args.drafts.split(","):
        rows += replay_rows(pair, prompts[0][1], args.replay_tokens, draft, _ints(args.replay_batches))
    df = pd.DataFrame(rows).assign(pair=args.pair, prompt_ids=",".join(pid for pid, _ in prompts),
                                   torch_threads=torch.get_num_threads())
    print(df[["measure", "draft", "batch", "s_per_token", "equal_share"]].to_string(index=False))
    print(write_table(df, args.out, provenance(pair, vars(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
