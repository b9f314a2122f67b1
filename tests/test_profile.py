"""bench.profile: a forward's time split into weight matmuls, attention, other ops and the time between ops."""
import pandas as pd
import pytest

from dynatree_lib.bench.profile import PARTS, forward_profile, matmul_seconds, op_part, profile_table
from tiny import tiny_model


def test_op_part_names_the_kernels():
    assert op_part("aten::_weight_int4pack_mm_for_cpu") == "weight matmuls"
    assert op_part("aten::_weight_int8pack_mm") == "weight matmuls"
    assert op_part("aten::addmm") == op_part("aten::mm") == "weight matmuls"
    assert op_part("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_part("aten::cat") == op_part("aten::mul") == "other ops"


@pytest.mark.parametrize("arch", ["qwen2", "gpt_neox"])
def test_forward_profile_parts_add_up(arch):
    df = forward_profile(tiny_model(arch, seed=0), nodes=(1, 4), prefix_len=8, repeats=3)
    assert list(df["part"].unique()) == list(PARTS)
    assert sorted(df["nodes"].unique()) == [1, 4]
    for _, rows in df.groupby("nodes"):
        assert rows["share"].sum() == pytest.approx(1.0)
        assert (rows["ms"] >= 0).all()
        by_part = rows.set_index("part")["ms"]
        assert by_part["weight matmuls"] > 0 and by_part["other ops"] > 0  # a forward runs both kinds of op
        assert rows["wall_ms"].nunique() == 1 and rows["wall_ms"].iloc[0] > 0
        assert 0 < rows["matmul_ms"].iloc[0] < rows["wall_ms"].iloc[0]  # the linears alone: part of a forward


def test_profile_table_one_row_per_model_and_size():
    df = pd.DataFrame([{"model": m, "nodes": n, "part": p, "ms": ms, "share": ms / 10, "wall_ms": 9.0,
                        "matmul_ms": 6.3}
                       for m in ("target", "draft") for n in (1, 4)
                       for p, ms in zip(PARTS, (6.0, 1.0, 2.0, 1.0))])
    table = profile_table(df)
    assert len(table) == 4
    row = table.loc[("draft", 4)]
    assert row["weight matmuls %"] == 60.0 and row["outside matmuls %"] == 30.0  # 1 - 6.3 / 9
    assert row["profiled ms"] == 10.0 and row["wall ms"] == 9.0 and row["matmuls alone ms"] == 6.3


def test_matmul_seconds_counts_every_linear_layer():
    from dynatree_lib.bench.profile import _linears

    model = tiny_model("qwen2", seed=0)
    assert len(_linears(model)) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the output layer
    assert matmul_seconds(model, 4, repeats=2) > 0


def test_forward_profile_refuses_no_repeats():
    with pytest.raises(ValueError, match="repeats"):
        forward_profile(tiny_model("qwen2", seed=0), nodes=(1,), prefix_len=4, repeats=0)
