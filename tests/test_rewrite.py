"""passes/rewrite.py, the NodeRewrite loop: what it hands a pass's ``check``."""
import onnx.parser

from passes.rewrite import Kept, NodeRewrite
from scan_testing import apply_pass

RELU = """<ir_version: 8, opset_import: ["" : {opset}]>
g (float[2] x) => (float[2] y) {{ y = Relu(x) }}"""


class _OpsetSeen(NodeRewrite, op="Relu"):
    """Not registered: keeps every Relu, saying which opset ``check`` saw."""

    name = "opset-seen"

    def check(self, node, shapes):
        return Kept(f"opset {self.opset}")


def test_check_reads_the_model_opset_as_self_opset():
    """A pass whose check depends on the opset reads ``self.opset``; min-max-to-clip and softplus-to-exp-log
    used to override ``run`` only to stash ``ctx.opset``, the pattern a newcomer copying them copied."""
    for opset in (11, 17):
        model, result = apply_pass(onnx.parser.parse_model(RELU.format(opset=opset)), _OpsetSeen())
        assert (result.changed, result.stats, result.notes) == (False, {"rewritten": 0}, [f"opset {opset}"])
        assert [node.op_type for node in model.graph.node] == ["Relu"]
