"""small_value's ScatterElements (TorchScript's index_copy shape arithmetic, session s33) against the mutants the first
tests left alive (session s34, mut37; docs/MUTATION.md): the default axis, a reduction given as bytes, each checked
against ONNX Runtime's own result."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from patterns.small_constants import small_value
from scan_testing import run


def _scatter(attrs: dict, data, indices, updates):
    out = gs.Variable("out", dtype=np.asarray(data).dtype, shape=list(np.shape(data)))
    graph = gs.Graph(nodes=[gs.Node("ScatterElements", attrs=attrs,
                                    inputs=[gs.Constant("data", np.asarray(data)), gs.Constant("i", np.asarray(indices)),
                                            gs.Constant("u", np.asarray(updates))], outputs=[out])],
                     outputs=[out], opset=17)
    return out, graph


@pytest.mark.parametrize("attrs", [{}, {"reduction": "none"}, {"reduction": b"none"}, {"axis": 0, "reduction": b"none"}])
def test_scatter_elements_along_the_default_axis_or_with_a_bytes_reduction_is_evaluated(attrs):
    # no axis: ONNX's default 0; reduction "none" as text or as bytes (an attribute made in code): a copy of the data
    # with the updates written, as ONNX Runtime gives it
    data = np.array([[2, 10, 8], [1, 1, 1]], np.int64)
    indices, updates = np.array([[1, 0, 1]], np.int64), np.array([[5, 6, 7]], np.int64)
    out, graph = _scatter(attrs, data, indices, updates)
    assert small_value(out).tolist() == [[2, 6, 8], [5, 1, 7]]
    ort_attrs = {key: value.decode() if isinstance(value, bytes) else value for key, value in attrs.items()}
    _, plain = _scatter(ort_attrs, data, indices, updates)
    assert run(gs.export_onnx(plain), {})[0].tolist() == [[2, 6, 8], [5, 1, 7]]


def test_a_bytes_reduction_other_than_none_is_not_evaluated():
    out, _ = _scatter({"reduction": b"add"}, np.array([2, 10, 8], np.int64), np.array([1], np.int64),
                      np.array([1], np.int64))
    assert small_value(out) is None


@pytest.mark.parametrize("axis, expected", [(-1, [[6, 5, 8], [1, 1, 7]]), (-2, [[2, 6, 8], [5, 1, 7]]),
                                            (1, [[6, 5, 8], [1, 1, 7]])])
def test_scatter_elements_along_an_axis_counted_from_the_end_is_evaluated(axis, expected):
    data = np.array([[2, 10, 8], [1, 1, 1]], np.int64)
    indices, updates = np.array([[1, 0], [2, 2]], np.int64), np.array([[5, 6], [7, 7]], np.int64)
    if axis == -2:   # (axis 0: indices and updates of one row)
        indices, updates = np.array([[1, 0, 1]], np.int64), np.array([[5, 6, 7]], np.int64)
    out, graph = _scatter({"axis": axis}, data, indices, updates)
    assert run(gs.export_onnx(graph), {})[0].tolist() == expected
    assert small_value(out).tolist() == expected


def test_scatter_elements_with_more_indices_than_the_data_holds_is_not_evaluated():
    # indices of shape [4] into data of shape [3]: ONNX requires the indices' sizes at most the data's
    out, _ = _scatter({"axis": 0}, np.array([2, 10, 8], np.int64), np.array([0, 1, 2, 0], np.int64),
                      np.array([1, 2, 3, 4], np.int64))
    assert small_value(out) is None


@pytest.mark.parametrize("indices, updates", [(np.array([[1.0, 0.0]], np.float32), np.array([[5, 6]], np.int64)),
                                              (np.array([[1, 0]], np.int64), np.array([[5]], np.int64))])
def test_scatter_elements_with_float_indices_or_updates_of_another_shape_is_not_evaluated(indices, updates):
    # ONNX takes int32/int64 indices of the updates' shape; numpy would read 1.0 as 1 and broadcast [[5]]
    out, _ = _scatter({"axis": 1}, np.array([[2, 10, 8], [1, 1, 1]], np.int64), indices, updates)
    assert small_value(out) is None


def test_scatter_elements_writes_int64_updates_past_two_to_the_53_exactly():
    # the updates written as the data's type, never through float64 (2^53 + 1 would come back 2^53)
    big = np.array([2**53 + 1], np.int64)
    out, graph = _scatter({"axis": 0}, np.array([2, 10, 8], np.int64), np.array([1], np.int64), big)
    assert small_value(out).tolist() == [2, 2**53 + 1, 8]
    assert run(gs.export_onnx(graph), {})[0].tolist() == [2, 2**53 + 1, 8]
