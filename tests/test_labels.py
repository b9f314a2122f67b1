"""Every label parses back to the same method: parse_method(label(m)) == m, for every method type."""
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dynatree_lib import (Autoregressive, DynaTree, FixedTree, HardwareAware, HFAssisted, HFPromptLookup, HybridTree,
                          Linear, PromptLookup, Streaming, TopNTree, label)
from dynatree_lib.bench import parse_method

# Labels print probabilities with :g (6 significant digits): values on a grid survive the round trip.
probs = st.integers(0, 99).map(lambda i: i / 100)
bits = st.sampled_from([None, 4, 8])
vocab = st.sampled_from([None, 64, 1000])
small = st.integers(1, 12)
DYNATREE_FIELDS = {f.name for f in dataclasses.fields(DynaTree)}

linears = st.builds(Linear, k=small, draft_bits=bits, draft_vocab=vocab)
fixeds = st.builds(FixedTree, depth=small, branch=small, threshold=probs, max_nodes=st.integers(1, 200),
                   draft_bits=bits, draft_vocab=vocab)
topns = st.builds(TopNTree, max_nodes=st.integers(1, 64), max_depth=small, topk=small, draft_bits=bits,
                  draft_vocab=vocab)


@st.composite
def dynatrees(draw):
    phase = draw(st.sampled_from([1, 2, 3, 4]))
    lo, hi = sorted((draw(probs), draw(probs)))
    b = sorted(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
    base = draw(st.integers(1, 6))
    # phase 1's label shows base_depth only, so max_depth keeps its default there
    max_depth = None if phase == 1 else draw(st.integers(base, 12))
    return DynaTree(phase=phase, high_conf=hi, low_conf=lo, min_branch=b[0], default_branch=b[1], max_branch=b[2],
                    base_depth=base, max_depth=max_depth, stop_threshold=draw(probs),
                    extend_threshold=draw(probs), learning_rate=draw(probs), target_acceptance=draw(probs),
                    window=draw(small), max_nodes=draw(st.integers(1, 200)), threshold=draw(probs),
                    pruning=draw(st.booleans()), node_budget=draw(st.booleans()), draft_bits=draw(bits),
                    **({"draft_vocab": draw(vocab)} if "draft_vocab" in DYNATREE_FIELDS else {}))


trees = st.one_of(linears, fixeds, topns, dynatrees())
lookups = st.builds(PromptLookup, max_ngram=small, k=small, branches=st.integers(1, 4))
hybrids = st.builds(HybridTree, tree=trees, max_ngram=small, k=small, branches=st.integers(1, 4))
hardware = st.builds(HardwareAware, max_depth=small, max_branch=small, max_nodes=st.integers(1, 128),
                     threshold=probs, warmup_rounds=st.integers(0, 5), probe_every=small, prior_accept=probs,
                     prior_weight=st.integers(1, 9).map(float), decay=st.integers(1, 100).map(lambda i: i / 100),
                     adapt_costs=st.booleans(), allow_ar=st.booleans(), draft_bits=bits)
hf = st.one_of(st.builds(HFAssisted, num_assistant_tokens=st.one_of(st.none(), small), draft_bits=bits),
               st.builds(HFPromptLookup, k=small, max_ngram=small))
inner = st.one_of(st.just(Autoregressive()), trees, lookups, hybrids, hardware)


@st.composite
def streamings(draw):
    size = draw(st.integers(2, 2048))
    # slack is not in the label (it never changes the output), so it keeps its default
    return Streaming(draw(inner), cache_size=size, sink_tokens=draw(st.integers(0, size - 1)))


methods = st.one_of(st.just(Autoregressive()), trees, lookups, hybrids, hardware, hf, streamings())


@given(methods)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_label_parses_back_to_the_same_method(method):
    assert parse_method(label(method)) == method, label(method)


@pytest.mark.parametrize("text", [
    "DynaTree-P3(D=5..8,B=1/2/3,conf=0.9/0.4)", "DynaTree-P1(D=5,B=1/2/3,conf=0.9/0.4,noprune)",
    "TopNTree(N=32,D=8,k=8)", "Hybrid(FixedTree(D=5,B=2,tau=0.03,N=128)+PL(n=3,K=8))",
    "Streaming(Linear(K=5),cache=1024,sinks=4)", "HFPromptLookup(K=10,n=2)", "PromptLookup(n=3,K=8,b=2)",
])
def test_stored_labels_parse(text):
    assert label(parse_method(text)) == text
