"""The rank sweep through the shape arithmetic exporters write (patterns/ranks.py)."""
import onnx.parser
import onnx_graphsurgeon as gs

from patterns.ranks import RankMap

# TorchScript's x.expand(-1, -1, r, -1, -1) with a symbolic batch: the target is built as a
# vector, reshaped to [-1], and its -1 entries replaced through ConstantOfShape(Shape(target)).
EXPAND_IDIOM = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch, 4, 1, 2, 9] x, int64[1] batch_size) => (float[batch, 4, 3, 2, 9] y) {
  minus_one = Constant<value = int64[1] {-1}>()
  repeats = Constant<value = int64[1] {3}>()
  target = Concat<axis = 0>(batch_size, minus_one, repeats, minus_one, minus_one)
  flat = Reshape(target, minus_one)
  measured = Shape(flat)
  ones = ConstantOfShape<value = int64[1] {1}>(measured)
  scalar = Constant<value = int64 {-1}>()
  negated = Mul(ones, scalar)
  is_free = Equal(flat, negated)
  shape = Where(is_free, ones, flat)
  expanded = Expand(x, shape)
  y = Identity(expanded)
}
"""


def test_expand_with_a_computed_target_keeps_its_rank():
    graph = gs.import_onnx(onnx.parser.parse_model(EXPAND_IDIOM))
    for tensor in graph.tensors().values():   # forget exporter shapes: only the sweep counts
        if not isinstance(tensor, gs.Constant) and tensor not in graph.inputs:
            tensor.shape = None
    ranks = RankMap(graph)
    tensors = graph.tensors()
    assert ranks.vector_length(tensors["flat"]) == 5
    assert ranks.vector_length(tensors["ones"]) == 5
    assert ranks.vector_length(tensors["shape"]) == 5
    assert ranks.rank(tensors["expanded"]) == 5


# RWKV's TorchScript export writes each step's output into a buffer with ScatterND; the next layer reads the buffer
SCATTERS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 8, 16] x, float[2, 16] row, int64[1, 1] at, int64[2, 8, 16] where, float[16, 16] w)
  => (float[2, 8, 16] y, float[2, 8, 16] z) {
  nd = ScatterND(x, at, row)
  y = MatMul(nd, w)
  elements = ScatterElements<axis = 1>(x, where, x)
  z = Identity(elements)
}
"""


def test_scatter_writes_keep_the_rank_of_the_buffer():
    """ScatterND and ScatterElements give their data input's shape: before s36 their output's rank was unknown, and
    every rank after it (RWKV's second layer: its running maximum's k_t could not be replayed, its steps not named)."""
    graph = gs.import_onnx(onnx.parser.parse_model(SCATTERS))
    for tensor in graph.tensors().values():
        if not isinstance(tensor, gs.Constant) and tensor not in graph.inputs:
            tensor.shape = None
    ranks = RankMap(graph)
    tensors = graph.tensors()
    assert [ranks.rank(tensors[name]) for name in ("nd", "y", "elements", "z")] == [3, 3, 3, 3]
