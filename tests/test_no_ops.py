"""patterns/no_ops.py on its own: which nodes between two states see_through walks back over (same-type Casts,
Identities, shape round trips proven by static shapes, by a Shape of the origin, or by a Squeeze of an Unsqueeze's
axes), where it stops, and times_one's Mul(x, 1). Each case names the tensor it must reach, and the near miss beside
it the tensor it must stop at (a wrong origin would let a recurrence's state skip a real reshape or a real Cast)."""
from __future__ import annotations

import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from patterns.no_ops import is_same_type_cast, see_through, times_one


def graph_of(body: str, inputs: str, outputs: str = "float y") -> gs.Graph:
    """The graph as written, without shape inference: intermediate tensors have no shape or type."""
    return gs.import_onnx(onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 13, "custom" : 1]>
    g ({inputs}) => ({outputs}) {{
      {body}
    }}"""))


def walk(graph: gs.Graph, name: str = "y") -> tuple[str, list[str]]:
    origin, nodes = see_through(graph.tensors()[name])
    return origin.name, [node.name for node in nodes]


# (inputs, body, what see_through(y) gives: origin and the nodes walked, nearest y first[, y's declaration])
CASES = {
    "same-type casts and identities": (
        "float[2,3] x", "a = Identity <name = \"i1\"> (x) \n b = Cast <to = 1> (a) \n y = Identity(b)", None),
    "a cast to another type stops the walk": (
        "float[2,3] x", "a = Cast<to = 10>(x) \n y = Identity(a)", ("a", ["?"])),
    "a static reshape round trip": (
        "float[2,3,4] x", "s1 = Constant<value = int64[2] {6, 4}>() \n s2 = Constant<value = int64[3] {2, 3, 4}>() \n"
        " f = Reshape(x, s1) \n y = Reshape(f, s2)", None, "float[2,3,4] y"),
    "a reshape that changes the shape is no round trip": (
        "float[2,3,4] x", "s1 = Constant<value = int64[2] {6, 4}>() \n y = Reshape(x, s1)", ("y", []), "float[6,4] y"),
    "a reshape back to a Shape of the origin (symbolic sizes)": (
        "float[N,3,4] x", "f = Flatten(x) \n s = Shape(x) \n y = Reshape(f, s)", None),
    "a reshape back to a Shape of an identity of the origin": (
        "float[N,3,4] x", "f = Flatten(x) \n xi = Identity(x) \n s = Shape(xi) \n y = Reshape(f, s)", None),
    "a reshape to a Shape with start is no round trip": (
        "float[N,3,4] x", "f = Flatten(x) \n s = Shape<start = 1>(x) \n y = Reshape(f, s)", ("y", [])),
    "a reshape to the Shape of another tensor is no round trip": (
        "float[N,3,4] x, float[N,3,4] w", "f = Flatten(x) \n s = Shape(w) \n y = Reshape(f, s)", ("y", [])),
    "a reshape to the Shape of a transpose of the origin is no round trip": (
        "float[N,3,4] x", "f = Flatten(x) \n t = Transpose<perm = [0, 2, 1]>(x) \n s = Shape(t) \n y = Reshape(f, s)",
        ("y", [])),
    "a reshape to a computed target is no round trip": (
        "float[N,3,4] x, int64[3] t", "f = Flatten(x) \n y = Reshape(f, t)", ("y", [])),
    "a squeeze of the axes an unsqueeze added": (
        "float[N,3] x", "ax = Constant<value = int64[1] {1}>() \n u = Unsqueeze(x, ax) \n y = Squeeze(u, ax)", None),
    "a squeeze of other axes than the unsqueeze's": (
        "float[1,N] x", "a2 = Constant<value = int64[1] {2}>() \n a0 = Constant<value = int64[1] {0}>() \n"
        " u = Unsqueeze(x, a2) \n y = Squeeze(u, a0)", ("y", [])),
    "a squeeze of no axes after an unsqueeze": (
        "float[1,N] x", "a0 = Constant<value = int64[1] {0}>() \n u = Unsqueeze(x, a0) \n y = Squeeze(u)", ("y", [])),
    "two reshapes to one target are no round trip": (
        "float[N,6] x", "t = Constant<value = int64[3] {-1, 2, 3}>() \n r = Reshape(x, t) \n y = Reshape(r, t)",
        ("y", [])),
    "an unsqueeze of a squeeze is not taken": (
        "float[N,1,3] x", "ax = Constant<value = int64[1] {1}>() \n s = Squeeze(x, ax) \n y = Unsqueeze(s, ax)",
        ("y", [])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_see_through_reaches_exactly_the_tensor_equal_in_value_and_shape(case):
    inputs, body, expected, *outputs = CASES[case]
    graph = graph_of(body, inputs, *outputs)
    for position, node in enumerate(graph.nodes):
        node.name = node.name or f"n{position}"
    if expected is None:   # every node from x to y is walked over
        chain, tensor = [], graph.tensors()["y"]
        while tensor.name != "x":
            chain.append(tensor.inputs[0].name)
            tensor = tensor.inputs[0].inputs[0]
        expected = ("x", chain)
    elif expected[1] == ["?"]:
        expected = (expected[0], [graph.tensors()["y"].inputs[0].name])
    assert walk(graph) == expected


def test_a_cast_of_an_untyped_tensor_is_taken_as_float32():
    """No type recorded anywhere up the chain (a custom op's output): a Cast to float32 is the no-op, to float64 not."""
    graph = graph_of("u = custom.Op(x) \n a = Cast<to = 1>(u) \n b = Cast<to = 11>(u)", "float[2] x",
                     "float a, double b")
    cast_float, cast_double = (tensor.inputs[0] for tensor in graph.outputs)
    assert graph.tensors()["u"].dtype is None
    assert is_same_type_cast(cast_float) is True and is_same_type_cast(cast_double) is False
    typed = graph_of("a = Cast<to = 1>(x) \n b = Cast<to = 11>(x)", "double[2] x", "float a, double b")
    assert [is_same_type_cast(tensor.inputs[0]) for tensor in typed.outputs] == [False, True]


class Ranks:
    def __init__(self, ranks: dict):
        self.ranks = ranks

    def rank(self, tensor):
        return self.ranks.get(tensor.name)


@pytest.mark.parametrize("body, x_rank, found", [
    ("one = Constant<value = float {1.0}>() \n y = Mul(x, one)", None, True),
    ("one = Constant<value = float {1.0}>() \n y = Mul(one, x)", None, True),
    ("one = Constant<value = float[1] {1.0}>() \n y = Mul(x, one)", 1, True),
    ("one = Constant<value = float[1] {1.0}>() \n y = Mul(x, one)", None, False),   # [1] may add an axis to x
    ("one = Constant<value = float[1,1] {1.0}>() \n y = Mul(x, one)", 1, False),
    ("one = Constant<value = float {2.0}>() \n y = Mul(x, one)", None, False),
    ("one = Constant<value = float[2] {1.0, 1.0}>() \n y = Mul(x, one)", 1, False),
    ("one = Constant<value = float {1.0}>() \n y = Add(x, one)", None, False),
    ("one = Constant<value = float {1.0}>() \n y = custom.Mul(x, one)", None, False),
    ("y = Mul(x, w)", 1, False),
])
def test_times_one_finds_x_only_in_mul_by_a_constant_one_that_adds_no_axes(body, x_rank, found):
    graph = graph_of(body, "float[3] x, float[3] w")
    node = graph.tensors()["y"].inputs[0]
    ranks = Ranks({} if x_rank is None else {"x": x_rank})
    assert times_one(node, ranks) is (graph.tensors()["x"] if found else None)
    assert times_one(None, ranks) is None
