"""A round player: every round of one real generation, the tree drafted, the path the target accepted and its bonus
token, as one plotly figure with a slider (explorable in the static book, no kernel needed).

    gen, rounds = record_rounds(pair, prompt, DynaTree(), 48)
    player(gen, rounds, pair.tokenizer).show()

The recording wraps the method's own drafter (core.method.Drafter): what is drafted, verified and committed is
exactly what `generate` does with the method alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from ..core.loop import Generation, generate
from ..core.method import Drafter, Speculative
from ..methods.names import display_name
from .plots import TEMPLATE
from .treeviz import COLORS, _layout, token_label


@dataclass
class Round:
    tokens: list[int]  # the drafted tree in BFS order, node 0 the root (the last committed token)
    parents: list[int]
    depth: list[int]
    committed: list[int]  # what the round committed: the accepted draft tokens, then the bonus token

    @property
    def path(self) -> list[int]:
        """The accepted nodes, root first: from the root, the child carrying each committed token but the last."""
        path = [0]
        for token in self.committed[:-1]:
            path.append(next(i for i, p in enumerate(self.parents) if p == path[-1] and self.tokens[i] == token))
        return path


class _RecordingDrafter(Drafter):
    def __init__(self, inner: Drafter, trees: list):
        self.inner, self.trees, self.pending = inner, trees, None

    def propose(self, state, max_depth):
        drafted = self.inner.propose(state, max_depth)
        if drafted is not None:
            tree = drafted.tree
            self.pending = (tree.tokens.tolist(), tree.parents.tolist(), tree.depth.tolist())
        return drafted

    def notes(self):
        return self.inner.notes()

    def learn(self, record):
        self.trees.append(self.pending)  # None: the round drafted nothing (a plain target step)
        self.pending = None
        self.inner.learn(record)

    def summary(self):
        return self.inner.summary()


class _Recording(Speculative):
    """`method` as generate runs it, its drafter wrapped to keep each round's tree."""

    def __init__(self, method: Speculative, trees: list):
        self.method, self.trees = method, trees
        self.draft_bits, self.draft_vocab = method.draft_bits, method.draft_vocab
        self.supports_sampling, self.rolls_back_cache = method.supports_sampling, method.rolls_back_cache

    def drafter(self, run):
        return _RecordingDrafter(self.method.drafter(run), self.trees)

    def target_cache(self):
        return self.method.target_cache()

    def label(self) -> str:
        return self.method.label()


def record_rounds(pair, prompt, method: Speculative, max_new_tokens: int, **options) -> tuple[Generation, list[Round]]:
    """Generate with `method` (greedy; `options` as for generate) and keep every round that drafted a tree."""
    if not isinstance(method, Speculative):
        raise ValueError(f"a round player needs a method that drafts trees, got {display_name(method)}")
    trees: list = []
    gen = generate(pair, prompt, _Recording(method, trees), max_new_tokens, **options)
    rounds, at = [], 0
    for record, tree in zip(gen.trace, trees):
        committed = gen.token_ids[at + 1: at + 1 + record["committed"]]  # the prefill committed token 0
        at += record["committed"]
        if tree is not None and len(committed) == record["accepted"] + 1:  # a full round (not cut at the end)
            rounds.append(Round(*tree, committed))
    return gen, rounds


def player(gen: Generation, rounds: list[Round], tokenizer=None, title: str | None = None) -> go.Figure:
    """One tree per round, depth left to right; a slider moves through the rounds. Green: the accepted path; orange
    diamond: the bonus token; blue: drafted nodes the target did not accept."""
    if not rounds:
        raise ValueError("no round drafted a tree: nothing to play")
    fig = go.Figure()
    per_round, widest, deepest = 3, 1, 1
    for r, rnd in enumerate(rounds):
        path = rnd.path
        parents = rnd.parents + [path[-1]]
        depth = rnd.depth + [len(path)]
        y = _layout(parents, list(range(len(parents))))
        widest, deepest = max(widest, max(y) + 1), max(deepest, max(depth))
        on_path = set(path[1:])
        edges_x, edges_y, path_x, path_y = [], [], [], []
        for i, p in enumerate(parents):
            if p < 0:
                continue
            xs, ys = (path_x, path_y) if i in on_path or i == len(parents) - 1 else (edges_x, edges_y)
            xs += [depth[p], depth[i], None]
            ys += [y[p], y[i], None]
        labels = [token_label(tokenizer, t) for t in rnd.tokens] + [token_label(tokenizer, rnd.committed[-1])]
        colors = ([COLORS["root"]] + [COLORS["accepted"] if i in on_path else COLORS["draft"]
                                      for i in range(1, len(rnd.tokens))] + [COLORS["bonus"]])
        symbols = ["circle"] * len(rnd.tokens) + ["diamond"]
        visible = r == 0
        fig.add_scatter(x=edges_x, y=edges_y, mode="lines", line=dict(color="#8fa8c8", width=1.2),
                        hoverinfo="skip", showlegend=False, visible=visible)
        fig.add_scatter(x=path_x, y=path_y, mode="lines", line=dict(color=COLORS["accepted"], width=3),
                        hoverinfo="skip", showlegend=False, visible=visible)
        fig.add_scatter(x=depth, y=y, mode="markers+text", text=labels, textposition="middle right",
                        marker=dict(color=colors, symbol=symbols, size=11, line=dict(width=1, color="white")),
                        hovertemplate="%{text}<extra></extra>", showlegend=False, visible=visible)
    steps = []
    for r, rnd in enumerate(rounds):
        shown = [r * per_round <= i < (r + 1) * per_round for i in range(per_round * len(rounds))]
        steps.append(dict(method="update", label=str(r + 1), args=[
            {"visible": shown},
            {"title.text": f"Round {r + 1} of {len(rounds)}: {len(rnd.tokens) - 1} drafted nodes, "
                           f"{len(rnd.committed) - 1} accepted + 1 bonus"}]))
    first = rounds[0]
    fig.update_layout(
        template=TEMPLATE, showlegend=False, height=int(30 * widest + 200),
        title=title or f"Round 1 of {len(rounds)}: {len(first.tokens) - 1} drafted nodes, "
                       f"{len(first.committed) - 1} accepted + 1 bonus",
        xaxis=dict(title="depth", dtick=1, range=[-0.3, deepest + 1.6], zeroline=False),
        yaxis=dict(visible=False, autorange="reversed", range=[widest, -1]),
        sliders=[dict(steps=steps, active=0, currentvalue=dict(prefix="round "), pad=dict(t=40))],
        margin=dict(b=90))
    return fig
