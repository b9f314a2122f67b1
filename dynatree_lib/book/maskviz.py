"""A draft tree's attention mask and position ids, as the library builds them for one verification forward, and the
check that they are right: every node's logits from the tree-masked forward equal those of a plain forward over the
node's own path (chapter 02).

    view = treeviz.draft_one_tree(pair, prompt, FixedTree(depth=5, branch=2, threshold=0.03))
    tree_mask_figure(view, pair.tokenizer)          the tree beside its mask
    tree_logits(...) vs path_logits(...)            one masked forward against one forward per path
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch

from ..core import kvcache
from ..core.forward import forward
from ..core.mask import tree_attention_mask, tree_position_ids
from ..core.tree import Tree
from ..core.verify import verify
from ..methods import label
from .plots import TEMPLATE
from .treeviz import TreeView, token_label, tree_figure

MASK_CLASSES = ("blocked", "prefix", "ancestor")  # 0, 1, 2 in mask_classes


def mask_classes(tree: Tree, prefix_len: int) -> torch.Tensor:
    """(n, prefix_len + n) long: 0 where `tree_attention_mask` blocks attention, 1 for visible committed-prefix keys,
    2 for visible tree keys (the node itself and its ancestors). Read off the additive mask itself."""
    mask = tree_attention_mask(tree.ancestors, prefix_len, torch.float32)[0, 0]
    visible = mask == 0
    out = torch.zeros_like(mask, dtype=torch.long)
    out[:, :prefix_len][visible[:, :prefix_len]] = 1
    out[:, prefix_len:][visible[:, prefix_len:]] = 2
    return out


def mask_figure(tree: Tree, prefix_len: int, tokenizer=None, *, prefix_shown: int = 3,
                title: str | None = "Tree attention mask") -> go.Figure:
    """Heatmap of the tree attention mask: rows are queries (tree nodes), columns keys (the last `prefix_shown`
    prefix positions, then the tree nodes); prefix / ancestor-or-self / blocked in three colours."""
    classes = mask_classes(tree, prefix_len)
    shown = min(prefix_shown, prefix_len)
    z = classes[:, prefix_len - shown:]
    names = [f"{i}:{token_label(tokenizer, int(t))}" for i, t in enumerate(tree.tokens.tolist())]
    cols = [f"p{prefix_len - shown + j}" for j in range(shown)] + names
    colorscale = [[0, "#f2f2f2"], [1 / 3, "#f2f2f2"], [1 / 3, "#9e9e9e"], [2 / 3, "#9e9e9e"], [2 / 3, "#2e8b57"],
                  [1, "#2e8b57"]]
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=title, height=max(360, 28 * len(names) + 220),
                      xaxis=dict(title=f"key (… {prefix_len - shown} earlier prefix keys, all visible)", side="bottom",
                                 tickangle=-60),
                      yaxis=dict(title="query (tree node)", autorange="reversed"))
    fig.add_heatmap(
        z=z.tolist(), x=cols, y=names, zmin=-0.5, zmax=2.5, colorscale=colorscale, xgap=1, ygap=1,
        colorbar=dict(tickvals=[0, 1, 2], ticktext=list(MASK_CLASSES), title="key is"),
        customdata=[[MASK_CLASSES[v] for v in row] for row in z.tolist()],
        hovertemplate="query %{y}<br>key %{x}<br>%{customdata}<extra></extra>",
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def tree_mask_figure(view: TreeView, tokenizer=None, *, prefix_shown: int = 3, title: str | None = None) -> go.Figure:
    """The tree (left) beside its attention mask (right), one figure: node labels match the mask's rows."""
    from plotly.subplots import make_subplots

    left = tree_figure(view, tokenizer, show_pruned=False, numbered=True)
    right = mask_figure(view.tree, len(view.prompt_ids), tokenizer, prefix_shown=prefix_shown, title=None)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.42, 0.58], horizontal_spacing=0.08,
                        subplot_titles=("draft tree (node:token, draft probability)", "attention mask (query x key)"))
    for trace in left.data:
        if trace.name == "target's bonus token" or trace.line.dash == "dash":
            continue  # the bonus token is the target's output, not a tree node: it has no row in the mask
        fig.add_trace(trace, row=1, col=1)
    heat = right.data[0]
    heat.colorbar.update(x=1.02, len=0.8)
    fig.add_trace(heat, row=1, col=2)
    fig.update_layout(template=TEMPLATE, title=title or f"{label(view.method)}: tree and tree attention mask",
                      height=max(left.layout.height, right.layout.height) + 60, margin=dict(t=110),
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0))
    fig.update_xaxes(left.layout.xaxis, row=1, col=1)
    fig.update_yaxes(visible=False, autorange="reversed", row=1, col=1)
    fig.update_xaxes(right.layout.xaxis, type="category", row=1, col=2)
    fig.update_yaxes(autorange="reversed", type="category", row=1, col=2)
    return fig


def position_frame(tree: Tree, prefix_len: int, tokenizer=None) -> pd.DataFrame:
    """Per node: token, parent, depth and the position id the target sees (`tree_position_ids`)."""
    pos = tree_position_ids(tree.depth, prefix_len)[0]
    return pd.DataFrame(dict(node=range(len(tree)), token=[token_label(tokenizer, t) for t in tree.tokens.tolist()],
                             parent=tree.parents.tolist(), depth=tree.depth.tolist(), position_id=pos.tolist()))


@torch.no_grad()
def tree_logits(model, prompt_ids: list[int], tree: Tree, *, tree_mask: bool = True) -> torch.Tensor:
    """The model's next-token logits at every node in one tree-masked forward over the prompt's cache (as verify).
    `tree_mask=False` keeps the tree's position ids but lets the model use its ordinary causal mask over the BFS
    order, so a node also sees earlier siblings and cousins: what goes wrong without the tree mask."""
    cache = kvcache.new_cache(model)
    forward(model, torch.tensor([prompt_ids], device=model.device), cache, logits_to_keep=1)
    if tree_mask:
        return verify(model, cache, tree).float()
    positions = tree_position_ids(tree.depth, len(prompt_ids))
    return forward(model, tree.tokens.unsqueeze(0), cache, positions).float()


@torch.no_grad()
def path_logits(model, prompt_ids: list[int], tree: Tree) -> torch.Tensor:
    """Brute force for `tree_logits`: each node's logits from a plain causal forward over the prompt followed by
    the node's own root-to-node path, no cache, no tree mask (one forward per node)."""
    rows = []
    for i in range(len(tree)):
        ids = list(prompt_ids) + tree.tokens[tree.path(i)].tolist()
        out = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False, logits_to_keep=1)
        rows.append(out.logits[0, -1].float())
    return torch.stack(rows)
