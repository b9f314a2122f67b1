"""core.forward: the last positions' logits are computed from a freshly laid-out copy of their hidden states."""
import pytest
import torch

from dynatree_lib.core import kvcache
from dynatree_lib.core.forward import forward
from tiny import ARCHS, tiny_pair


@pytest.mark.parametrize("arch", ARCHS)
def test_kept_positions_reach_the_output_layer_with_their_own_layout(arch):
    """A slice of the hidden states keeps the whole sequence's stride, and on CPU torch's bf16 linear takes a path
    some 40x slower for such a tensor (session 9: 1.1 s against 28 ms for Qwen2.5-1.5B's output layer). The output
    layer must see a tensor laid out for its own shape, and the logits must equal the full forward's last rows."""
    model = tiny_pair(arch, "perturbed").target
    seen = []
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append((tuple(args[0].shape), args[0].stride())))
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    try:
        with torch.inference_mode():
            last = forward(model, ids, kvcache.new_cache(model), logits_to_keep=2)
            full = forward(model, ids, kvcache.new_cache(model))
    finally:
        handle.remove()
    shape, stride = seen[0]
    assert stride == torch.empty(shape).stride()  # not (8 * hidden, hidden, 1): the sequence's stride
    torch.testing.assert_close(last, full[-2:], rtol=0, atol=1e-5)
