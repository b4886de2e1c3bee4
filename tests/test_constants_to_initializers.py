"""constants-to-initializers: Constant nodes as initializers (tpu-mlir 1.30.2 reads only a Constant's 'value')."""
from __future__ import annotations

import numpy as np
import onnx.parser
import onnx_graphsurgeon as gs

from passes.base import PassContext
from passes.graph_io import graph_to_model
from passes.registry import get_pass
from passes.tpu_legality import find_violations
from tests.test_tpu_passes import HEADER, X, apply, histogram, same_outputs


def test_constant_nodes_become_initializers():
    text = f"""{HEADER}
    g (float[2,5,7] x) => (float[2,5,7] y) {{
      axis = Constant<value_int = 2>()
      scale = Constant<value_float = 0.5>()
      shape = Constant<value_ints = [2, 5, 7]>()
      c = CumSum(x, axis)
      s = Mul(c, scale)
      y = Reshape(s, shape)
    }}"""
    graph = gs.import_onnx(onnx.parser.parse_model(text))
    assert "Constant node without a 'value'" in " ".join(find_violations(graph))
    before, after, result = apply(text, "constants-to-initializers")
    assert result.stats == {"converted": 3}
    assert histogram(after) == {"CumSum": 1, "Mul": 1, "Reshape": 1}
    assert sorted(i.name for i in after.graph.initializer) == ["axis", "scale", "shape"]
    same_outputs(before, after, {"x": X})


def test_a_constant_that_is_a_graph_output_or_not_numeric_is_kept_with_a_note():
    """The two notes of the pass: a Constant whose output is a graph output stays a node (an initializer is no
    output), and one of a kind the pass does not read (a string) stays as it is."""
    text = f"""{HEADER}
    g (float[3] x) => (float[3] y, float[3] c) {{
      c = Constant<value = float[3] {{1, 2, 3}}>()
      d = Constant<value_float = 2.0>()
      label = Constant<value_string = "scan">()
      m = Mul(x, d)
      y = Add(m, c)
    }}"""
    model = onnx.parser.parse_model(text)
    for index, node in enumerate(model.graph.node):
        node.name = f"n{index}"
    graph = gs.import_onnx(model)
    result = get_pass("constants-to-initializers").run(graph, PassContext(opset=17, explain=True))
    assert (result.changed, result.stats) == (True, {"converted": 1})
    assert result.notes == ["Constant 'n0' kept: a graph output", "Constant 'n2' kept: attribute ['value_string']"]
    out = graph_to_model(graph)
    assert histogram(out) == {"Add": 1, "Constant": 2, "Mul": 1}
    assert [i.name for i in out.graph.initializer] == ["d"]
    same_outputs(model, out, {"x": np.array([1, 2, 3], np.float32)})


def test_a_graph_without_constant_nodes_is_left_unchanged():
    text = f"""{HEADER}
    g (float[3] x) => (float[3] y) <float[1] two = {{2.0}}> {{ y = Mul(x, two) }}"""
    before, after, result = apply(text, "constants-to-initializers")
    assert (result.changed, result.stats, result.notes) == (False, {"converted": 0}, [])
    assert histogram(after) == {"Mul": 1}


def test_constants_after_other_nodes_are_converted_and_notes_come_back_when_none_is():
    """(s32, mut35) A Constant after another op is still converted (the scan goes on past a non-Constant); a graph
    whose only Constant is kept (a graph output) is unchanged and says why."""
    text = f"""{HEADER}
    g (float[3] x) => (float[3] y) {{
      m = Neg(x)
      d = Constant<value_float = 2.0>()
      y = Mul(m, d)
    }}"""
    before, after, result = apply(text, "constants-to-initializers")
    assert (result.changed, result.stats, result.notes) == (True, {"converted": 1}, [])
    assert histogram(after) == {"Mul": 1, "Neg": 1}
    assert [i.name for i in after.graph.initializer] == ["d"]
    same_outputs(before, after, {"x": np.array([1, -2, 3], np.float32)})
    text = f"""{HEADER}
    g (float[3] x) => (float[3] y, float[3] c) {{
      y = Neg(x)
      c = Constant<value = float[3] {{1, 2, 3}}>()
    }}"""
    model = onnx.parser.parse_model(text)
    model.graph.node[1].name = "n1"
    result = get_pass("constants-to-initializers").run(gs.import_onnx(model), PassContext(opset=17, explain=True))
    assert (result.changed, result.stats, result.notes) == (False, {"converted": 0},
                                                            ["Constant 'n1' kept: a graph output"])
