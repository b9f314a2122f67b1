"""Sampling (temperature > 0) is lossless: every method's output is distributed exactly as target-only sampling.

The statistical test compares the first three generated tokens of a few thousand seeded runs with their EXACT
distribution under the target (enumerated with one batched target forward), with a chi-square goodness-of-fit test.
Three tokens because the first comes from the prefill; the next two come from the first speculative round, whose tree
is two levels deep when four tokens are asked for.
"""
import math

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from dynatree_lib import Autoregressive, DynaTree, FixedTree, HFAssisted, HFPromptLookup, HybridTree, Linear, ModelPair, TopNTree, generate, label
from dynatree_lib.core import kvcache
from dynatree_lib.core.draft import DraftState, draft_tree, fixed_expand
from dynatree_lib.core.sampling import Proposals, accept_sampling, draw_without_replacement, process_logits
from dynatree_lib.core.tree import from_parents
from tiny import ARCHS, perturbed, reference_greedy, tiny_model, tiny_pair

ALPHA = 1e-3  # each chi-square test's level: the chance that a correct sampler fails it
SMALL_VOCAB = 8
PROMPT = [5, 1, 2, 3, 1, 2, 4, 6]  # repeats, so that HybridTree's n-gram lookup often fires
SETTINGS = {  # name -> (temperature, top_k, top_p)
    "t1": (1.0, None, None),
    "t0.7-k5-p0.9": (0.7, 5, 0.9),
}


def chi_square_pvalue(observed: torch.Tensor, expected: torch.Tensor) -> tuple[float, int]:
    """Pearson's goodness-of-fit p-value and degrees of freedom; cells expecting fewer than 5 counts are pooled."""
    observed, expected = observed.double().flatten(), expected.double().flatten()
    small = expected < 5
    obs = torch.cat([observed[~small], observed[small].sum().view(1)])
    exp = torch.cat([expected[~small], expected[small].sum().view(1)])
    if exp[-1] < 5:  # the pooled cell itself is too small: merge it into the smallest regular cell
        i = int(torch.argmin(exp[:-1]))
        obs[i] += obs[-1]
        exp[i] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    statistic = float(((obs - exp) ** 2 / exp).sum())
    df = len(exp) - 1
    # The chi-square survival function is the regularised upper incomplete gamma Q(df/2, x/2).
    p = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                      torch.tensor(statistic / 2, dtype=torch.float64)))
    return p, df


def test_chi_square_pvalue_is_calibrated():
    # Known values: chi2.sf(3.0, 2) = exp(-1.5); a perfect fit gives 1; a gross misfit gives ~0.
    assert math.isclose(float(torch.special.gammaincc(torch.tensor(1.0), torch.tensor(1.5))), math.exp(-1.5),
                        rel_tol=1e-6)
    expected = torch.tensor([50.0, 30.0, 20.0])
    assert chi_square_pvalue(expected, expected)[0] == pytest.approx(1.0)
    assert chi_square_pvalue(torch.tensor([20.0, 30.0, 50.0]), expected)[0] < 1e-6


@pytest.fixture(scope="module")
def small_pair():
    target = tiny_model("llama", seed=0, vocab=SMALL_VOCAB, layers=1)
    return ModelPair(target=target, draft=perturbed(target, 0.5, seed=1), name="tiny-llama-v8")


def exact_first_three(target, prompt, temperature, top_k, top_p) -> torch.Tensor:
    """P(t1, t2, t3) under target-only sampling, shape (V, V, V): every two-token continuation in one batch."""
    v = target.get_output_embeddings().weight.shape[0]
    a, b = torch.meshgrid(torch.arange(v), torch.arange(v), indexing="ij")
    ids = torch.cat([torch.tensor(prompt).expand(v * v, -1), a.reshape(-1, 1), b.reshape(-1, 1)], dim=1)
    with torch.no_grad():
        logits = target(input_ids=ids).logits
    probs = process_logits(logits[:, len(prompt) - 1:], temperature, top_k, top_p)  # (V*V, 3, V)
    p1 = probs[0, 0]  # every row shares the prompt
    p2 = probs[::v, 1]  # (V, V): row a is P(t2 | t1 = a)
    p3 = probs[:, 2].reshape(v, v, v)  # [a, b] is P(t3 | t1 = a, t2 = b)
    return p1[:, None, None] * p2[:, :, None] * p3


def run_counts(pair, method, n_runs, temperature, top_k, top_p) -> torch.Tensor:
    v = SMALL_VOCAB
    counts = torch.zeros(v, v, v)
    for seed in range(n_runs):
        out = generate(pair, PROMPT, method, 4, stop_at_eos=False, temperature=temperature, top_k=top_k,
                       top_p=top_p, seed=seed)
        counts[tuple(out.token_ids[:3])] += 1
    return counts


# (method, setting, runs). FixedTree runs once as a full binary tree (the plain SpecInfer/Sequoia case) and once
# with a threshold and a budget that keep some draws out of the tree, so rejected and accepted off-tree draws and
# draws past a truncated support all occur. Seeds are fixed (0..runs-1), so the outcome is deterministic; the run
# counts keep the file near a minute of CPU while a broken acceptance rule still fails by many orders of magnitude.
DISTRIBUTION_CASES = [
    (Autoregressive(), "t1", 400),
    (Linear(2), "t1", 1000),
    (FixedTree(depth=2, branch=2, threshold=0.0), "t1", 1200),
    (Linear(2), "t0.7-k5-p0.9", 1000),
    (FixedTree(depth=2, branch=3, threshold=0.1, max_nodes=4), "t0.7-k5-p0.9", 1200),
    # The other tree methods share the loop; fewer runs, enough for a gross error. TopNTree prunes after drafting
    # (draft.reorder), HybridTree adds n-gram nodes that the acceptance tries as point-mass proposals.
    (TopNTree(nodes=4, max_depth=2, topk=3), "t1", 500),
    (DynaTree(base_depth=2, max_depth=2), "t1", 500),
    (HybridTree(tree=FixedTree(depth=2, branch=2, threshold=0.0), max_ngram=2, num_tokens=2), "t1", 500),
]


@pytest.mark.parametrize("method, setting, n_runs", DISTRIBUTION_CASES,
                         ids=[f"{label(m)}-{s}" for m, s, _ in DISTRIBUTION_CASES])
def test_sampling_matches_target_distribution(small_pair, method, setting, n_runs):
    temperature, top_k, top_p = SETTINGS[setting]
    exact = exact_first_three(small_pair.target, PROMPT, temperature, top_k, top_p)
    counts = run_counts(small_pair, method, n_runs, temperature, top_k, top_p)
    assert counts[exact == 0].sum() == 0, "a token outside the top-k/top-p support was generated"
    p, df = chi_square_pvalue(counts, n_runs * exact)
    print(f"{label(method)} {setting}: chi-square p = {p:.4g} (df = {df}, {n_runs} runs)")
    assert p > ALPHA, f"{label(method)} {setting}: p = {p:.3g} (df = {df})"


def test_draws_without_replacement_follow_sequential_sampling():
    # Exact law of an ordered pair drawn without replacement: q(x) * q(y) / (1 - q(x)).
    q = torch.tensor([0.5, 0.3, 0.15, 0.05])
    gen = torch.Generator().manual_seed(0)
    draws = draw_without_replacement(q.expand(20000, -1).contiguous(), 2, gen)
    counts = torch.zeros(4, 4)
    counts.index_put_((draws[:, 0], draws[:, 1]), torch.ones(len(draws)), accumulate=True)
    exact = q[:, None] * q[None, :] / (1 - q[:, None])
    exact.fill_diagonal_(0.0)
    assert counts.diagonal().sum() == 0
    p, _ = chi_square_pvalue(counts[~torch.eye(4, dtype=torch.bool)], 20000 * exact[~torch.eye(4, dtype=torch.bool)])
    assert p > ALPHA
    # Past the support: -1.
    assert draw_without_replacement(torch.tensor([[0.0, 1.0, 0.0]]), 3, gen)[0].tolist() == [1, -1, -1]


@pytest.mark.parametrize("with_draws", [False, True], ids=["point-mass children", "draws plus a fixed child"])
def test_accept_sampling_first_token_law(with_draws):
    """The first committed token of a round follows the target's distribution at the root, whether the root's
    children are recorded draws (tried with q) or tokens fixed in advance (tried as point masses), or both."""
    v = 6
    gen = torch.Generator().manual_seed(1)
    p_root = torch.tensor([0.05, 0.4, 0.1, 0.25, 0.0, 0.2])
    q_root = torch.tensor([0.3, 0.3, 0.0, 0.1, 0.2, 0.1])
    # Root with children 1, 3, 4; node 1 has child 2. Target rows for the non-root nodes are irrelevant here.
    tree = from_parents([0, 1, 3, 4, 2], [-1, 0, 0, 0, 1])
    target_probs = torch.cat([p_root[None], torch.full((4, v), 1 / v)])
    n = 6000
    counts = torch.zeros(v)
    for _ in range(n):
        samples = None
        if with_draws:
            draws = draw_without_replacement(q_root[None], 2, gen)  # token 4 (if drawn) stays off the tree
            samples = Proposals(torch.tensor([0]), draws, q_root[None])
        path, bonus = accept_sampling(tree, target_probs, samples, gen)
        first = int(tree.tokens[path[1]]) if len(path) > 1 else bonus
        counts[first] += 1
    assert counts[4] == 0  # p_root(4) = 0: never emitted, even when drawn or in the tree
    p, _ = chi_square_pvalue(counts[p_root > 0], n * p_root[p_root > 0])
    assert p > ALPHA


def test_process_logits_matches_transformers_warpers():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3
    for temperature, top_k, top_p in [(1.0, None, None), (0.7, 5, 0.9), (1.3, None, 0.5), (0.5, 3, None),
                                      (1.0, 1, None), (2.0, 80, 1e-6)]:
        scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k is not None:
            scores = TopKLogitsWarper(top_k)(None, scores)
        if top_p is not None:
            scores = TopPLogitsWarper(top_p)(None, scores)
        ours = process_logits(logits, temperature, top_k, top_p)
        torch.testing.assert_close(ours, torch.softmax(scores, dim=-1), msg=str((temperature, top_k, top_p)))
    assert torch.equal(process_logits(logits, 0.0), torch.nn.functional.one_hot(logits.argmax(-1), 50).float())


@pytest.mark.parametrize("method", [Autoregressive(), Linear(4), FixedTree(depth=4, branch=3, threshold=0.02)],
                         ids=label)
def test_same_seed_same_tokens(method):
    pair = tiny_pair("llama", "perturbed")
    prompt = [3, 14, 15, 92]
    run = lambda seed: generate(pair, prompt, method, 24, stop_at_eos=False, temperature=0.9, top_p=0.95,
                                seed=seed).token_ids
    first = run(7)
    assert run(7) == first
    assert any(run(seed) != first for seed in (8, 9, 10)), "different seeds should give different samples"


@pytest.mark.parametrize("method", [Autoregressive(), Linear(3), FixedTree(depth=3, branch=2, threshold=0.0)],
                         ids=label)
@pytest.mark.parametrize("arch", ARCHS)
def test_temperature_zero_is_the_greedy_path(arch, method):
    pair = tiny_pair(arch, "perturbed")
    prompt = [5, 6, 7, 8]
    expected = reference_greedy(pair.target, prompt, 20)
    assert generate(pair, prompt, method, 20, stop_at_eos=False).token_ids == expected
    # temperature 0 ignores top_k, top_p and seed, as transformers' do_sample=False does.
    out = generate(pair, prompt, method, 20, stop_at_eos=False, temperature=0.0, top_k=2, top_p=0.5, seed=1)
    assert out.token_ids == expected


def test_greedy_drafting_keeps_no_draft_distributions():
    pair = tiny_pair("llama", "perturbed")
    state = DraftState(kvcache.new_cache(pair.draft), pending=[5, 6, 7])
    assert draft_tree(pair.draft, state, fixed_expand(2, 0.0, 20), width=2, max_depth=3).samples is None


@pytest.mark.parametrize("kwargs, name", [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": "1"}, "temperature"),
    ({"temperature": 1.0, "top_k": 0}, "top_k"),
    ({"temperature": 1.0, "top_k": 2.5}, "top_k"),
    ({"temperature": 1.0, "top_k": True}, "top_k"),
    ({"temperature": 1.0, "top_p": 0.0}, "top_p"),
    ({"temperature": 1.0, "top_p": 1.5}, "top_p"),
    ({"temperature": 1.0, "seed": 1.5}, "seed"),
])
def test_bad_sampling_parameters_are_rejected(kwargs, name):
    pair = tiny_pair("llama", "perturbed")
    with pytest.raises(ValueError, match=name):
        generate(pair, [1, 2], Linear(2), 4, **kwargs)


@pytest.mark.parametrize("method", [HFAssisted(), HFPromptLookup()], ids=label)
def test_transformers_peers_refuse_sampling(method):
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_pair("llama", "perturbed"), [1, 2], method, 4, temperature=1.0)
