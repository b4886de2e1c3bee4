"""Every export variant (tools/variants_table.py), a real naive export, re-rolled by every pipeline
that fits it: all scans found, no unrolled step left, output within 1e-5 of PyTorch.

docs/VARIANTS.md is the table of the same runs (python -m tools.variants_table).
"""
import pytest

from tools.variants_table import CHECK_BATCH, TOLERANCE, VARIANTS, compile_variant, export_variant, own_step_ops

CASES = [pytest.param(variant, pipeline, id=f"{variant.name}-{pipeline}")
         for variant in VARIANTS for pipeline in variant.pipelines]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """exported(variant) -> (naive path, step ops outside the scans), one export per variant per session."""
    cache = {}

    def get(variant):
        if variant.name not in cache:
            naive = export_variant(variant, tmp_path_factory.mktemp(variant.name))
            cache[variant.name] = naive, own_step_ops(naive)
        return cache[variant.name]

    return get


@pytest.mark.parametrize("variant, pipeline", CASES)
def test_variant_rerolled_and_verified(exported, variant, pipeline, tmp_path):
    naive, own = exported(variant)
    compiled = compile_variant(naive, pipeline, tmp_path, own)
    assert compiled.rerolled == variant.expected_scans
    assert compiled.steps == sum(variant.scan_lengths)
    assert compiled.step_ops_left == {}, f"unrolled step ops left: {compiled.step_ops_left}"
    assert "If" not in compiled.histogram
    if pipeline == "cpu":   # the dynamo exporter's Softplus threshold guard goes with the Softplus (s18)
        assert "Greater" not in compiled.histogram and "Softplus" not in compiled.histogram
    assert compiled.nodes_after < compiled.nodes_before
    assert compiled.rel_l2 <= TOLERANCE
    if variant.dynamic_batch:
        assert compiled.symbolic_batch
        assert compiled.rel_l2_other_batch <= TOLERANCE, f"at batch {CHECK_BATCH}"


def test_every_axis_of_the_brief_is_covered():
    """opsets 12/13/17/18, both exporters, static 1/2 and dynamic batch, four readouts, two indexings,
    N = 1 and 16, a 1-D Mamba block, and scan lengths that are not multiples of the chunk sizes."""
    assert {v.resolved_opset for v in VARIANTS} >= {12, 13, 17, 18}
    assert {v.exporter for v in VARIANTS} == {"torchscript", "dynamo"}
    assert {1, 2} <= {v.batch for v in VARIANTS if not v.dynamic_batch} and any(v.dynamic_batch for v in VARIANTS)
    assert {v.readout for v in VARIANTS} == {"einsum", "mulsum", "conv", "conv-channels"}
    assert {v.index for v in VARIANTS} == {"gather", "slice"}
    assert {v.d_state for v in VARIANTS} >= {1, 16}
    assert any(v.model == "mamba1d" for v in VARIANTS)
    lengths = {length for v in VARIANTS for length in v.scan_lengths}
    assert any(length % 24 and length % 8 and length > 24 for length in lengths)
    assert any(v.index == "slice" and v.dynamic_batch and v.resolved_opset == 12 for v in VARIANTS)
    # planes other than square, taller and wider, static and dynamic batch (session s32)
    sides = [v.height_width for v in VARIANTS if v.model == "vmamba"]
    assert any(h > w for h, w in sides) and any(h < w for h, w in sides)
    assert any(v.height_width[0] != v.height_width[1] and v.dynamic_batch for v in VARIANTS)
