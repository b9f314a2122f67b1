"""One draft tree, looked at closely: draft it for a prompt, see what the policy kept and pruned, what the target
accepted, and draw it (tree figure, attention-mask heatmap) for the book.

    view = draft_one_tree(pair, prompt, FixedTree(depth=5, branch=2, threshold=0.03))
    tree_figure(view, pair.tokenizer).show()

`draft_one_tree` runs exactly the first round of `generate`: target prefill (its argmax is the root), one
`draft_tree` call with the method's own expand policy, one tree-masked target forward, greedy acceptance. It only
listens in on the policy (every candidate it was offered and which it kept), so the tree is the one the method
really drafts. Around it: the same round under other shapes (`draft_variations`), what the round did in numbers for
a page's prose (`round_numbers`) and, for a confidence-aware tree, the branch rule at each node (`branching_frame`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch

from ..core import kvcache
from ..core.draft import DraftState, draft_tree
from ..core.forward import forward
from ..core.loop import Run, check_inputs, encode
from ..core.method import Speculative
from ..core.tree import Tree
from ..core.verify import accept_greedy, verify
from ..methods.base import FixedTree, TreeDrafter, label
from .page import inline_code, live_jupyter  # noqa: F401  (live_jupyter: chapter 01 asks whether its sliders work)
from .plots import TEMPLATE

COLORS = {"root": "#404040", "draft": "#2f6db5", "accepted": "#2e8b57", "pruned": "#b8b8b8", "bonus": "#d9622b"}


@dataclass
class TreeView:
    method: object
    prompt_ids: list[int]
    tree: Tree  # node 0 is the root: the target's first token after the prompt
    # every candidate offered to the policy: parent, rank, token, logp, cum_logp, node, reason, and `allowed`, the
    # children the policy allows its parent (the branch rule applied to the parent's top-1 probability)
    candidates: pd.DataFrame
    target_next: list[int]  # the target's argmax after each node (what it would write next)
    path: list[int]  # accepted nodes, root first
    bonus: int  # the target's token after the last accepted node
    draft_forwards: int

    @property
    def committed(self) -> list[int]:
        """Tokens this round commits: the accepted draft tokens and the bonus token."""
        return self.tree.tokens[self.path[1:]].tolist() + [self.bonus]


@torch.no_grad()
def draft_one_tree(pair, prompt, method) -> TreeView:
    """The first round of `generate(pair, prompt, method, ...)`: the drafted tree, every candidate the expand policy
    saw (kept or dropped, and why), and what the target accepted."""
    prompt_ids = encode(pair, prompt)
    check_inputs(pair, prompt_ids, method, 1)
    # as generate: the draft the method drafts with
    pair = pair.with_draft(method.draft_bits, method.draft_vocab)
    run = Run(pair=pair, prompt_ids=prompt_ids, max_new_tokens=1, eos_ids=set())
    p = method.drafter(run) if isinstance(method, Speculative) else None
    if not isinstance(p, TreeDrafter):
        raise ValueError(f"method must grow its tree level by level (Linear, FixedTree, DynaTree, AdaptiveTree) to "
                         f"draw it, got {label(method)}")
    expand, width, depth, select_frontier, allowed, threshold = (p.expand, p.width, p.depth, p.select_frontier,
                                                                 p.branches, p.threshold)
    log_threshold = math.log(threshold) if threshold > 0 else -math.inf
    rows: list[dict] = []

    def listening_expand(tree, frontier, cand_logp, cand_tokens):
        parents, tokens, logp = expand(tree, frontier, cand_logp, cand_tokens)
        kept = {(int(p), int(t)): len(tree) + i for i, (p, t) in enumerate(zip(parents.tolist(), tokens.tolist()))}
        n_allowed = allowed(cand_logp[:, 0].exp()).tolist()
        cum = tree.cum_logp[frontier].unsqueeze(1) + cand_logp
        for r, parent in enumerate(frontier.tolist()):
            for c in range(cand_logp.shape[1]):
                token = int(cand_tokens[r, c])
                node = kept.get((parent, token), -1)
                if node >= 0:
                    reason = "kept"
                elif c >= n_allowed[r]:
                    reason = "branch"  # beyond the node's branch count: never a proposal
                elif float(cum[r, c]) < log_threshold:  # the comparison select_children makes
                    reason = "threshold"
                else:
                    reason = "budget"
                rows.append(dict(parent=parent, rank=c, token_id=token, logp=float(cand_logp[r, c]),
                                 cum_logp=float(cum[r, c]), node=node, reason=reason, allowed=n_allowed[r]))
        return parents, tokens, logp

    target, draft = pair.target, pair.draft
    cache = kvcache.new_cache(target)
    ids = torch.tensor([prompt_ids], device=target.device)
    root = int(forward(target, ids, cache, logits_to_keep=1)[-1].argmax())
    state = DraftState(kvcache.new_cache(draft), pending=prompt_ids + [root])
    drafted = draft_tree(draft, state, listening_expand, width, depth, select_frontier)
    target_next = verify(target, cache, drafted.tree).argmax(dim=-1)
    path, bonus = accept_greedy(drafted.tree, target_next)
    columns = ["parent", "rank", "token_id", "logp", "cum_logp", "node", "reason", "allowed"]
    return TreeView(method, prompt_ids, drafted.tree, pd.DataFrame(rows, columns=columns),
                    target_next.tolist(), path, bonus, drafted.forwards)


def token_label(tokenizer, token_id: int) -> str:
    """A token as readable text: spaces as '␣', newlines as '↵', tabs as '⇥' (so whitespace tokens are visible)."""
    text = tokenizer.decode([int(token_id)]) if tokenizer is not None else str(int(token_id))
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def tree_frame(view: TreeView, tokenizer=None) -> pd.DataFrame:
    """One row per tree node in BFS order: token, parent, depth, draft probability, cumulative probability, whether
    the target accepted it, the target's own next token there, and (for expanded nodes) the draft's top-1
    probability and the number of children it got."""
    t = view.tree
    cand = view.candidates
    top1 = cand[cand["rank"] == 0].set_index("parent")["logp"]
    children = cand[cand["reason"] == "kept"].groupby("parent").size()
    on_path = set(view.path)
    rows = []
    for i in range(len(t)):
        rows.append(dict(
            node=i, token=token_label(tokenizer, int(t.tokens[i])), token_id=int(t.tokens[i]),
            parent=int(t.parents[i]), depth=int(t.depth[i]), prob=float(t.logp[i].exp()),
            cum_prob=float(t.cum_logp[i].exp()), accepted=i in on_path,
            target_next=token_label(tokenizer, view.target_next[i]),
            draft_top1=math.exp(top1[i]) if i in top1.index else math.nan,
            children=int(children.get(i, 0)),
        ))
    return pd.DataFrame(rows)


def pruned_frame(view: TreeView, tokenizer=None, reasons=("threshold", "budget")) -> pd.DataFrame:
    """Candidates the policy offered but dropped, for the given reasons ('threshold': cumulative probability below
    tau; 'budget': over max_nodes; 'branch': beyond the node's branch count)."""
    out = view.candidates[view.candidates["reason"].isin(reasons)].copy()
    out.insert(2, "token", [token_label(tokenizer, t) for t in out["token_id"]])
    out["prob"] = out["logp"].map(math.exp)
    out["cum_prob"] = out["cum_logp"].map(math.exp)
    out["depth"] = [int(view.tree.depth[p]) + 1 for p in out["parent"]]
    return out.drop(columns=["logp", "cum_logp", "node", "allowed"]).reset_index(drop=True)


def tree_summary(view: TreeView) -> dict:
    """One row for a table comparing trees: size, depth, draft forwards, candidates dropped by each rule, and what
    the target accepted."""
    reasons = view.candidates["reason"].value_counts()
    depth = view.tree.max_depth
    return {
        "method": label(view.method), "nodes": view.tree.num_draft, "depth": depth,
        "draft_forwards": view.draft_forwards, "pruned_threshold": int(reasons.get("threshold", 0)),
        "pruned_budget": int(reasons.get("budget", 0)), "accepted": len(view.path) - 1,
        "committed": len(view.committed), "accepted_depth_share": (len(view.path) - 1) / depth if depth else math.nan,
        "accepted_node_share": (len(view.path) - 1) / view.tree.num_draft if view.tree.num_draft else math.nan,
    }


def summary_frame(views) -> pd.DataFrame:
    """`tree_summary` of each view, one row each, in the order given."""
    return pd.DataFrame([tree_summary(v) for v in views])


def round_numbers(view: TreeView, tokenizer=None) -> dict:
    """What a page says about one round, for page.glue_numbers: `tree_summary`'s numbers, with the method and the
    committed text as inline code for {glue:md} roles."""
    text = tokenizer.decode(view.committed) if tokenizer is not None else str(view.committed)
    return {**tree_summary(view), "method": inline_code(label(view.method)), "text": inline_code(repr(text))}


def draft_variations(pair, prompt, view: TreeView, changes) -> dict[str, TreeView]:
    """`view`'s round drafted again by its method with each change of its fields (e.g. [dict(depth=3),
    dict(branch=3, threshold=0.1)]), by method label, `view` itself first."""
    names = {f.name for f in fields(view.method)}
    views = {label(view.method): view}
    for change in changes:
        unknown = sorted(set(change) - names)
        if unknown:
            raise ValueError(f"{label(view.method)} has no field {', '.join(unknown)} to vary")
        method = replace(view.method, **change)
        views[label(method)] = draft_one_tree(pair, prompt, method)
    return views


CONFIDENCE = {"low": COLORS["bonus"], "mid": COLORS["draft"], "high": COLORS["accepted"]}


def branching_frame(view: TreeView, tokenizer=None) -> pd.DataFrame:
    """One row per expanded node of a confidence-aware tree (AdaptiveTree, DynaTree): the draft's top-1
    probability there, its confidence class (low below low_conf, high above high_conf), the children the branch
    rule allowed it and those it kept."""
    method = view.method
    if not hasattr(method, "low_conf"):
        raise ValueError(f"{label(method)} does not branch by confidence (no low_conf / high_conf)")
    nodes = tree_frame(view, tokenizer)
    allowed = view.candidates.groupby("parent")["allowed"].first()
    out = nodes[nodes["draft_top1"].notna()].copy()
    out["allowed"] = [int(allowed[i]) for i in out["node"]]
    out["confidence"] = pd.cut(out["draft_top1"], [0, method.low_conf, method.high_conf, 1.0],
                               labels=list(CONFIDENCE), include_lowest=True)
    return out[["node", "token", "depth", "draft_top1", "confidence", "allowed", "children"]].reset_index(drop=True)


def branching_figure(frame: pd.DataFrame, method) -> go.Figure:
    """`branching_frame`'s nodes: children allowed against the draft's top-1 probability, coloured by confidence
    class, with the method's low_conf and high_conf as dotted lines."""
    fig = px.scatter(
        frame, x="draft_top1", y="allowed", color="confidence", hover_name="token",
        hover_data=["node", "children"], template=TEMPLATE, category_orders={"confidence": list(CONFIDENCE)},
        color_discrete_map=CONFIDENCE,
        title="Branches allowed at each expanded node against the draft's top-1 probability",
        labels={"draft_top1": "draft's top-1 probability p at the node", "allowed": "children allowed"})
    for x in (method.low_conf, method.high_conf):
        fig.add_vline(x=x, line_dash="dot", line_color="#6b6b6b")
    fig.update_traces(marker_size=10)
    fig.update_yaxes(dtick=1)
    return fig


def _layout(parents: list[int], order_key: list[float]) -> list[float]:
    """y coordinate per node: leaves on consecutive rows (in child order), a parent centred on its children."""
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parents):
        if p >= 0:
            children.setdefault(p, []).append(i)
    y = [0.0] * len(parents)
    next_row = [0]

    def place(i):
        kids = sorted(children.get(i, []), key=lambda k: order_key[k])
        if not kids:
            y[i] = float(next_row[0])
            next_row[0] += 1
        else:
            for k in kids:
                place(k)
            y[i] = (y[kids[0]] + y[kids[-1]]) / 2
    place(0)
    return y


def tree_figure(view: TreeView, tokenizer=None, *, show_pruned: bool = True, numbered: bool = False,
                title: str | None = None) -> go.Figure:
    """The tree, depth left to right: each node labelled with its token and draft probability (and its BFS index
    when `numbered`); the accepted path in green and the target's bonus token after it in orange; pruned candidates
    (threshold or budget) in grey."""
    nodes = tree_frame(view, tokenizer)
    pruned = pruned_frame(view, tokenizer) if show_pruned else pruned_frame(view, tokenizer, reasons=())
    # One combined node list: tree nodes, then pruned candidates, then the bonus token.
    kind = ["root"] + ["accepted" if a else "draft" for a in nodes["accepted"][1:]] + ["pruned"] * len(pruned) + ["bonus"]
    parents = list(nodes["parent"]) + list(pruned["parent"]) + [view.path[-1]]
    depth = list(nodes["depth"]) + list(pruned["depth"]) + [len(view.path)]
    tokens = list(nodes["token"]) + list(pruned["token"]) + [token_label(tokenizer, view.bonus)]
    probs = list(nodes["prob"]) + list(pruned["prob"]) + [math.nan]
    cum = list(nodes["cum_prob"]) + list(pruned["cum_prob"]) + [math.nan]
    kept = view.candidates[view.candidates["node"] >= 0].set_index("node")["rank"]
    # Siblings top to bottom in the draft's own order (rank 0 first); the bonus token above its siblings.
    order = [int(kept.get(i, 0)) for i in range(len(nodes))] + list(pruned["rank"]) + [-1]
    y = _layout(parents, order)
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=title or f"Draft tree of {label(view.method)}: {len(view.tree) - 1} "
                      f"nodes, {len(view.path) - 1} accepted + 1 bonus",
                      xaxis=dict(title="depth", dtick=1, zeroline=False),
                      yaxis=dict(visible=False, autorange="reversed"),
                      height=max(320, 34 * (max(y) + 1) + 150), showlegend=True,
                      margin=dict(t=100))  # room for the title above the legend
    for style, dash, color in (("solid", None, "#8fa8c8"), ("pruned", "dot", COLORS["pruned"]),
                               ("path", None, COLORS["accepted"]), ("bonus", "dash", COLORS["bonus"])):
        xs, ys = [], []
        for i, p in enumerate(parents):
            if p < 0:
                continue
            s = {"pruned": "pruned", "bonus": "bonus", "accepted": "path"}.get(kind[i], "solid")
            if s == style:
                xs += [depth[p], depth[i], None]
                ys += [y[p], y[i], None]
        if xs:
            fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=color, dash=dash,
                            width=3 if style == "path" else 1.2), hoverinfo="skip", showlegend=False)
    names = {"root": "root (last committed token)", "draft": "draft node", "accepted": "accepted by the target",
             "pruned": "pruned candidate", "bonus": "target's bonus token"}
    for k, name in names.items():
        idx = [i for i, kk in enumerate(kind) if kk == k]
        if not idx:
            continue
        text = [tokens[i] if k in ("root", "bonus") else f"{tokens[i]} {probs[i]:.2f}" for i in idx]
        if numbered and k not in ("pruned", "bonus"):
            text = [f"{i}:{t}" for i, t in zip(idx, text)]  # kept nodes come first: their index is the BFS index
        fig.add_scatter(
            x=[depth[i] for i in idx], y=[y[i] for i in idx], mode="markers+text", name=name,
            marker=dict(color=COLORS[k], size=9 if k == "pruned" else 12, symbol="diamond" if k == "bonus" else "circle",
                        line=dict(width=1, color="white")),
            text=text, textposition="middle right",
            textfont=dict(color="#9a9a9a" if k == "pruned" else "#222222", size=12),
            customdata=[[tokens[i], probs[i], cum[i]] for i in idx],
            hovertemplate="%{customdata[0]}<br>p=%{customdata[1]:.3f}, cumulative %{customdata[2]:.3f}<extra>"
                          + name + "</extra>",
        )
    fig.update_xaxes(range=[-0.3, max(depth) + 1.2])
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# Interactive exploration (JupyterLab only)


def explorer(pair, prompt, depth: int = 5, branch: int = 2, threshold: float = 0.03):
    """ipywidgets controls (depth, branch, threshold) that redraw the FixedTree draft tree of `prompt` on change."""
    import ipywidgets as w
    from IPython.display import display

    out = w.Output()
    controls = dict(
        depth=w.IntSlider(value=depth, min=1, max=8, description="depth", continuous_update=False),
        branch=w.IntSlider(value=branch, min=1, max=4, description="branch", continuous_update=False),
        threshold=w.FloatLogSlider(value=threshold, base=10, min=-3, max=-0.3, step=0.1, description="threshold",
                                   continuous_update=False, readout_format=".3f"),
    )

    def redraw(depth, branch, threshold):
        view = draft_one_tree(pair, prompt, FixedTree(depth=depth, branch=branch, threshold=threshold))
        with out:
            out.clear_output(wait=True)
            display(tree_figure(view, pair.tokenizer))

    w.interactive_output(redraw, controls)
    return w.VBox([w.HBox(list(controls.values())), out])
