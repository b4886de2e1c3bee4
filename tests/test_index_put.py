"""patterns/index_put.axis_size: a buffer's size along its written axis, followed back to a declared size (a
TorchScript dynamic-batch export declares no intermediate shapes): RecurrentGemma's buffer is zeros_like of its causal
Conv's output cut to the sequence length, Transpose(Slice(Conv(Transpose(embed[ids])), 0, Shape(h)[1], axis 2))."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto

from patterns.index_put import axis_size
from patterns.ranks import RankMap

L, WIDTH = 8, 4


def _conv_buffer(pads=(3, 3), stride=1, dilation=1, end=None, slice_step=None):
    """zeros_like(Transpose(Slice(Conv(Transpose(Gather(embedding, ids))), 0, end, axis 2))), ids ("batch", L); end:
    None for Shape(h)[1] (L), "bool" for Cast(Cast(Shape(h)[1], bool), int64) (1), else a constant; slice_step
    "input": the graph input "step"."""
    ids = gs.Variable("ids", np.int64, ["batch", L])
    inputs = [ids]
    embedding = gs.Constant("embedding", np.zeros((16, WIDTH), np.float32))
    weight = gs.Constant("weight", np.zeros((WIDTH, 1, 4), np.float32))
    h, moved, conv, cut, back, shape, zeros = (gs.Variable(name) for name in
                                               ("h", "moved", "conv", "cut", "back", "shape", "zeros"))
    nodes = [gs.Node("Gather", inputs=[embedding, ids], outputs=[h], attrs={"axis": 0}),
             gs.Node("Transpose", inputs=[h], outputs=[moved], attrs={"perm": [0, 2, 1]}),
             gs.Node("Conv", inputs=[moved, weight], outputs=[conv],
                     attrs={"group": WIDTH, "kernel_shape": [4], "pads": list(pads), "strides": [stride],
                            "dilations": [dilation]})]
    if end in (None, "bool"):
        h_shape, length, ends = gs.Variable("h_shape"), gs.Variable("length"), gs.Variable("ends")
        nodes += [gs.Node("Shape", inputs=[h], outputs=[h_shape]),
                  gs.Node("Gather", inputs=[h_shape, gs.Constant("one", np.array(1, np.int64))], outputs=[length],
                          attrs={"axis": 0})]
        if end == "bool":
            flag, cast = gs.Variable("flag"), gs.Variable("cast")
            nodes += [gs.Node("Cast", inputs=[length], outputs=[flag], attrs={"to": TensorProto.BOOL}),
                      gs.Node("Cast", inputs=[flag], outputs=[cast], attrs={"to": TensorProto.INT64})]
            length = cast
        nodes.append(gs.Node("Unsqueeze", inputs=[length, gs.Constant("zero_axis", np.array([0], np.int64))],
                             outputs=[ends]))
    else:
        ends = gs.Constant("ends", np.array([end], np.int64))
    slice_inputs = [conv, gs.Constant("starts", np.array([0], np.int64)), ends, gs.Constant("axes", np.array([2]))]
    if slice_step == "input":
        inputs.append(gs.Variable("step", np.int64, [1]))
        slice_inputs.append(inputs[-1])
    elif slice_step is not None:
        slice_inputs.append(gs.Constant("steps", np.array([slice_step], np.int64)))
    nodes += [gs.Node("Slice", inputs=slice_inputs, outputs=[cut]),
              gs.Node("Transpose", inputs=[cut], outputs=[back], attrs={"perm": [0, 2, 1]}),
              gs.Node("Shape", inputs=[back], outputs=[shape]),
              gs.Node("ConstantOfShape", inputs=[shape], outputs=[zeros])]
    graph = gs.Graph(nodes=nodes, inputs=inputs, outputs=[zeros], opset=17)
    return graph, graph.tensors()


@pytest.mark.parametrize("kwargs, axis, expected", [
    ({}, 1, L),                                   # Slice(conv (L + 3), 0, Shape(h)[1] = L)
    ({}, 2, WIDTH),                               # the Conv's output channels, through the Transpose
    ({"end": 100}, 1, L + 3),                     # an end past the size: the size
    ({"end": 5}, 1, 5),
    ({"pads": (0, 0), "end": 100}, 1, L - 3),     # no padding: L - k + 1
    ({"stride": 2, "end": 100}, 1, (L + 6 - 4) // 2 + 1),
    ({"dilation": 2, "end": 100}, 1, L + 6 - 7 + 1),
    ({"slice_step": 2}, 1, None),                 # a strided Slice: not followed
    ({"slice_step": "input"}, 1, None),           # a step known at run time only: may be 2 (s23, was taken as 1)
    ({"end": "bool"}, 1, None),                   # an end through a Cast to bool is 1, not L (s23, was L)
    ({}, 0, None),                                # the batch: named, no size
])
def test_axis_size_follows_a_declared_size_through_the_ops_that_keep_or_change_it(kwargs, axis, expected):
    graph, tensors = _conv_buffer(**kwargs)
    assert axis_size(tensors["zeros"], axis, RankMap(graph)) == expected
