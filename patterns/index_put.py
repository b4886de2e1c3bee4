"""TorchScript's `out[:, t] = y` where the batch is symbolic: index tuples proven for every batch.

With a dynamic batch, the TorchScript exporter lowers `out[:, .., :, p] = y` (a colons, then a constant
position p) to ScatterND(out, indices, update) with indices built at run time:

    v_j     = Reshape(Range(0, Shape(out)[j], 1), [-1, 1, .., 1])      j < a: axis j's positions, (n_j, 1^(a-j))
    v_a     = p                                                         a constant, every size 1
    T       = Shape(v_0 + .. + v_{a-1} + p')                            their broadcast shape (n_0, .., n_{a-1}, 1)
              (or Where(Equal(T, -1s), 1s, T): the same, a shape holding no -1)
    indices = Concat(Unsqueeze(Expand(v_0, T), -1), .., Unsqueeze(Expand(v_a, T), -1), axis=-1)

Each v_j broadcasts to (n_0, .., n_{a-1}, 1) (v_j's size n_j sits at axis j, right-aligned, ones elsewhere), so the
tuples are (i_0, .., i_{a-1}, p) over every i in row-major order: the whole slice at p of axis a, whatever n_0 .. n_{a-1}.
`out[:, t, :] = y` adds a column per axis after a (v_j = Reshape(Range(..), [-1, 1, ..]) likewise, the last axis's the
Range itself): the tuples (i_0, .., p, .., i_{k-1}), every element of the slice.
`index_put_position` checks exactly this structure, with Shape(out) read from any buffer of the chain (they all
have one shape). `axis_size` finds the buffer's size along the written axis, which such exports declare nowhere,
by following it back through ops that keep it to a declared size (the graph input's sequence length).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_ints, constant_value, node_axes, normalize_axis, optional_input, producer
from patterns.ranks import RankMap

MAX_BROADCAST_TREE = 8   # ops in the tree whose Shape is the Expand target
MAX_SIZE_WALK = 32       # producers followed looking for an axis's size

_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div"})
# Ops whose output has their (first) input's shape.
_SHAPE_KEEPING = frozenset({"Identity", "Cast", "Sigmoid", "Tanh", "Relu", "Exp", "Log", "Neg", "Abs", "Sqrt",
                            "Softplus", "Erf", "Reciprocal", "Dropout"})


def _keeps_size(node: Optional[gs.Node], ops=("Identity", "Squeeze")) -> bool:
    """`node` is one of `ops` or a Cast to int64: it keeps a size's value (a Cast to bool, int8 or float may not:
    Range(0, Cast(Cast(n, bool), int64), 1) counts one position whatever n)."""
    return node is not None and bool(node.inputs) and (
        node.op in ops or (node.op == "Cast" and node.attrs.get("to") == onnx.TensorProto.INT64))


def _through_casts(tensor: gs.Tensor) -> gs.Tensor:
    node = producer(tensor)
    while _keeps_size(node):
        tensor, node = node.inputs[0], producer(node.inputs[0])
    return tensor


def _is_shape_of(tensor: gs.Tensor) -> Optional[gs.Tensor]:
    """X where `tensor` is Shape(X), whole (no start or end), else None."""
    node = producer(tensor)
    if (node is None or node.op != "Shape" or not node.inputs or int(node.attrs.get("start", 0)) != 0
            or node.attrs.get("end") is not None):
        return None
    return node.inputs[0]


def _axis_size_read(tensor: gs.Tensor, buffers: set[int]) -> Optional[int]:
    """j where `tensor` is Shape(buffer)[j] (a scalar Gather, through Casts), buffer one of `buffers`."""
    gather = producer(_through_casts(tensor))
    if gather is None or gather.op != "Gather" or int(gather.attrs.get("axis", 0)) != 0:
        return None
    measured = _is_shape_of(gather.inputs[0])
    index = constant_value(gather.inputs[1])
    if measured is None or id(measured) not in buffers or index is None or index.ndim != 0:
        return None
    return int(index) if np.issubdtype(index.dtype, np.integer) and index >= 0 else None


def _is_arange_of_axis(tensor: gs.Tensor, axis: int, last: int, buffers: set[int]) -> bool:
    """`tensor` is Reshape(Range(0, Shape(buffer)[axis], 1), [-1] + [1] * (last - axis)) (the Range itself for the
    last axis)."""
    reshape = producer(tensor)
    if reshape is not None and reshape.op == "Range" and axis == last:
        arange = reshape
    elif reshape is None or reshape.op != "Reshape" or constant_ints(reshape.inputs[1]) != [-1] + [1] * (last - axis):
        return False
    else:
        arange = producer(reshape.inputs[0])
    if arange is None or arange.op != "Range" or len(arange.inputs) != 3:
        return False
    start, delta = constant_value(arange.inputs[0]), constant_value(arange.inputs[2])
    return (start is not None and start.size == 1 and start.reshape(-1)[0] == 0 and delta is not None
            and delta.size == 1 and delta.reshape(-1)[0] == 1 and _axis_size_read(arange.inputs[1], buffers) == axis)


def _all_ones_shape(value: Optional[np.ndarray], max_rank: int) -> bool:
    return value is not None and value.ndim <= max_rank and all(n == 1 for n in value.shape)


def _is_broadcast_shape(tensor: gs.Tensor, aranges: list, written: int) -> bool:
    """`tensor` is the broadcast shape of `aranges` and constants of every size 1: Shape of an elementwise tree over
    them (each arange among its leaves), or Where(Equal(S, M), X, S) of such an S with M negative everywhere (a
    shape holds no negative size, so that is S)."""
    where = producer(tensor)
    if where is not None and where.op == "Where" and len(where.inputs) == 3:
        equal, shape = producer(where.inputs[0]), where.inputs[2]
        if equal is None or equal.op != "Equal" or equal.inputs[0] is not shape or not _negative(equal.inputs[1], shape):
            return False
        if not _is_shape_of_like(where.inputs[1], shape):
            return False
        tensor = shape
    tree = _is_shape_of(tensor)
    if tree is None:
        return False
    leaves, stack, seen = set(), [tree], 0
    while stack:
        value = stack.pop()
        if any(value is arange for arange in aranges):
            leaves.add(id(value))
            continue
        if _all_ones_shape(constant_value(value), written + 1):
            continue
        node = producer(value)
        seen += 1
        if node is None or node.op not in _BROADCASTING or len(node.inputs) != 2 or seen > MAX_BROADCAST_TREE:
            return False
        stack += node.inputs
    return leaves == {id(arange) for arange in aranges}


def _is_shape_of_like(tensor: gs.Tensor, shape: gs.Tensor) -> bool:
    """ConstantOfShape(Shape(shape)): a vector as long as `shape` (its value does not matter to Where here)."""
    node = producer(tensor)
    return node is not None and node.op == "ConstantOfShape" and _is_shape_of(node.inputs[0]) is shape


def _negative(tensor: gs.Tensor, shape: gs.Tensor) -> bool:
    """`tensor` is Mul(ConstantOfShape(Shape(shape), v), c) with v * c < 0: negative everywhere."""
    mul = producer(tensor)
    if mul is None or mul.op != "Mul" or len(mul.inputs) != 2:
        return False
    filled, factor = producer(mul.inputs[0]), constant_value(mul.inputs[1])
    if not _is_shape_of_like(mul.inputs[0], shape) or factor is None or factor.size != 1:
        return False
    fill = filled.attrs.get("value")
    fill = np.asarray(fill.values if isinstance(fill, gs.Constant) else (0 if fill is None else fill))
    return fill.size == 1 and float(fill.reshape(-1)[0]) * float(factor.reshape(-1)[0]) < 0


def index_put_position(indices: gs.Tensor, buffers: set[int]) -> Optional[tuple[int, int]]:
    """(axis a, position p) when `indices` is TorchScript's index tuples of `out[:, .., :, p] =` or, with the axes
    after a too, `out[:, .., p, .., :] =` (module docstring), Shape(out) read from a tensor in `buffers` (ids); else
    None."""
    concat = producer(indices)
    if concat is None or concat.op != "Concat" or len(concat.inputs) < 2:
        return None
    columns = len(concat.inputs)
    if int(concat.attrs.get("axis", 0)) not in (-1, columns):
        return None
    expands = []
    for column in concat.inputs:
        unsqueeze = producer(column)
        if unsqueeze is None or unsqueeze.op != "Unsqueeze" or node_axes(unsqueeze) not in ([-1], [columns]):
            return None
        expand = producer(unsqueeze.inputs[0])
        if expand is None or expand.op != "Expand" or len(expand.inputs) != 2:
            return None
        expands.append(expand)
    written = [axis for axis, expand in enumerate(expands) if constant_value(expand.inputs[0]) is not None]
    if len(written) != 1:
        return None
    written = written[0]
    aranges = [expand.inputs[0] for axis, expand in enumerate(expands) if axis != written]
    if not all(_is_arange_of_axis(expand.inputs[0], axis, columns - 1, buffers)
               for axis, expand in enumerate(expands) if axis != written):
        return None
    position = constant_value(expands[written].inputs[0])
    if (not _all_ones_shape(position, columns) or position.size != 1
            or not np.issubdtype(position.dtype, np.integer)):
        return None
    if not all(_is_broadcast_shape(expand.inputs[1], aranges, columns - 1) for expand in expands):
        return None
    return written, int(position.reshape(-1)[0])


def axis_size(tensor: gs.Tensor, axis: int, ranks: RankMap, depth: int = 0,
              memo: Optional[dict] = None) -> Optional[int]:
    """The size of `tensor` along `axis` (>= 0), followed back to a declared or constant size through ops that keep
    it: shape-keeping ops, broadcasting ones (an input of a size other than 1 there: the output has it, or the
    model fails), Slices of other axes, MatMul's rows and columns, Transpose, ConstantOfShape(Shape(x)); else None.
    One walk reads each (tensor, axis, depth) once (`memo`): a tensor reached along two paths at every step (a
    residual Add(x, Relu(x)), a Slice of x to Shape(x)[k]) made the walk exponential in its depth."""
    if memo is None:
        memo = {}
    key = (id(tensor), axis, depth)
    if key not in memo:
        memo[key] = _axis_size(tensor, axis, ranks, depth, memo)
    return memo[key]


def _axis_size(tensor: gs.Tensor, axis: int, ranks: RankMap, depth: int, memo: dict) -> Optional[int]:
    shape = getattr(tensor, "shape", None)
    if shape is not None and 0 <= axis < len(shape) and isinstance(shape[axis], (int, np.integer)) and shape[axis] >= 0:
        return int(shape[axis])
    node = producer(tensor)
    rank = ranks.rank(tensor)
    if node is None or depth > MAX_SIZE_WALK or rank is None or not 0 <= axis < rank:
        return None
    follow = None
    if node.op == "ConstantOfShape":
        sizes = constant_ints(node.inputs[0])
        if sizes is not None:
            return sizes[axis] if axis < len(sizes) and sizes[axis] >= 0 else None
        follow = (_is_shape_of(node.inputs[0]), axis)
    elif node.op in _SHAPE_KEEPING and node.inputs:
        follow = (node.inputs[0], axis)
    elif node.op in _BROADCASTING and len(node.inputs) == 2:
        for operand in node.inputs:
            operand_rank = ranks.rank(operand)
            if operand_rank is None or axis - (rank - operand_rank) < 0:
                continue
            size = axis_size(operand, axis - (rank - operand_rank), ranks, depth + 1, memo)
            if size is not None and size != 1:
                return size
        return None
    elif node.op == "Slice" and len(node.inputs) >= 4:
        axes = constant_ints(node.inputs[3])
        axes = None if axes is None else [normalize_axis(a, rank) for a in axes]
        if axes is None:
            return None
        if axis in axes:
            return _sliced_size(node, axes.index(axis), axis, ranks, depth, memo)
        follow = (node.inputs[0], axis)
    elif node.op == "Conv" and len(node.inputs) >= 2:
        return _conv_size(node, axis, rank, ranks, depth, memo)
    elif node.op == "Gather" and len(node.inputs) == 2:
        data_rank, indices_rank = ranks.rank(node.inputs[0]), ranks.rank(node.inputs[1])
        gathered = normalize_axis(int(node.attrs.get("axis", 0)), data_rank)
        if data_rank is None or indices_rank is None or gathered is None:
            return None
        if axis < gathered:
            follow = (node.inputs[0], axis)
        elif axis < gathered + indices_rank:
            follow = (node.inputs[1], axis - gathered)
        else:
            follow = (node.inputs[0], axis - indices_rank + 1)
    elif node.op == "MatMul" and len(node.inputs) == 2 and rank >= 2:
        left, right = ranks.rank(node.inputs[0]), ranks.rank(node.inputs[1])
        if axis == rank - 2 and left is not None and left >= 2 and right is not None and right >= 2:
            follow = (node.inputs[0], left - 2)   # (a right vector's product has the left's rows last)
        elif axis == rank - 1 and right is not None and right >= 2:
            follow = (node.inputs[1], right - 1)
    elif node.op == "Transpose" and node.inputs:
        perm = node.attrs.get("perm")
        follow = (node.inputs[0], int(perm[axis])) if perm is not None else (node.inputs[0], rank - 1 - axis)
    if follow is None or follow[0] is None:
        return None
    return axis_size(follow[0], follow[1], ranks, depth + 1, memo)


def _size_value(tensor: gs.Tensor, ranks: RankMap, depth: int, memo: dict) -> Optional[int]:
    """A size read Shape(y)[k] (through Unsqueeze, Squeeze, Identity, Cast to int64) of a size axis_size finds. Only
    a Slice's computed end comes here: a constant one is read by _sliced_size itself."""
    node = producer(tensor)
    while _keeps_size(node, ("Unsqueeze", "Squeeze", "Identity")):
        node = producer(node.inputs[0])
    if node is None or node.op != "Gather" or int(node.attrs.get("axis", 0)) != 0:
        return None
    measured, index = _is_shape_of(node.inputs[0]), constant_value(node.inputs[1])
    if measured is None or index is None or index.size != 1 or not np.issubdtype(index.dtype, np.integer):
        return None
    index = int(index.reshape(-1)[0])
    return axis_size(measured, index, ranks, depth + 1, memo) if index >= 0 else None


def _sliced_size(node: gs.Node, position: int, axis: int, ranks: RankMap, depth: int, memo: dict) -> Optional[int]:
    """The size a Slice leaves along `axis` (entry `position` of its axes), start, end and step 1 known, both >= 0."""
    steps_input = optional_input(node, 4)
    steps = constant_ints(steps_input) if steps_input is not None else [1] * (position + 1)
    if steps is None or steps[position] != 1:   # a step computed at run time may be other than 1
        return None
    size = axis_size(node.inputs[0], axis, ranks, depth + 1, memo)
    starts = constant_ints(node.inputs[1])
    ends = node.inputs[2]
    end_value = constant_ints(ends)
    if end_value is not None:
        end = end_value[position]
    else:   # a computed end: the first axis's only (a Slice of one axis, as TorchScript's x[:, :n])
        end = _size_value(ends, ranks, depth, memo) if position == 0 else None
    if size is None or starts is None or end is None or starts[position] < 0 or end < 0:
        return None
    return max(0, min(end, size) - min(starts[position], size))


def _conv_size(node: gs.Node, axis: int, rank: int, ranks: RankMap, depth: int, memo: dict) -> Optional[int]:
    """A Conv's output size: the batch's, the weight's output channels, or a spatial size from the input's, the
    kernel, pads, stride and dilation (auto_pad NOTSET)."""
    weight = constant_value(node.inputs[1])
    if axis == 0:
        return axis_size(node.inputs[0], 0, ranks, depth + 1, memo)
    if weight is None or weight.ndim != rank:
        return None
    if axis == 1:
        return int(weight.shape[0])
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET":
        return None
    spatial = rank - 2
    pads = list(node.attrs.get("pads", [0] * 2 * spatial))
    strides = list(node.attrs.get("strides", [1] * spatial))
    dilations = list(node.attrs.get("dilations", [1] * spatial))
    size = axis_size(node.inputs[0], axis, ranks, depth + 1, memo)
    if size is None or len(pads) != 2 * spatial or len(strides) != spatial or len(dilations) != spatial:
        return None
    k = axis - 2
    extent = dilations[k] * (weight.shape[axis] - 1) + 1
    return (size + pads[k] + pads[k + spatial] - extent) // strides[k] + 1
