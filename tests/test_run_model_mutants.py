"""verify.run_model and ort_worker.run against the mutants the first tests left alive (session s35, mut38;
docs/MUTATION.md): the timeout each hands on to the child (the lines that now also hand on `optimize`)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from passes import ort_worker
from passes.verify import RunTimedOut, run_model


def _slow_model(count=64):
    """y = x @ x @ ... (`count` MatMuls of 1500 x 1500): seconds of work, however fast the machine's cores are."""
    nodes, previous = [], "x"
    for index in range(count):
        nodes.append(helper.make_node("MatMul", [previous, "x"], [f"p{index}"]))
        previous = f"p{index}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1500, 1500])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1500, 1500])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


FEEDS = {"x": np.full((1500, 1500), 1e-3, np.float32)}


@pytest.mark.parametrize("optimize", [True, False])
def test_run_model_hands_its_timeout_to_the_child(optimize):
    start = time.monotonic()
    with pytest.raises(RunTimedOut):
        run_model(_slow_model(), FEEDS, timeout=0.3, optimize=optimize)
    assert time.monotonic() - start < 5


def test_ort_worker_run_hands_its_timeout_to_the_child():
    start = time.monotonic()
    with pytest.raises(ort_worker.TimedOut):
        ort_worker.run(_slow_model().SerializeToString(), None, FEEDS, 0.3, False)
    assert time.monotonic() - start < 5
    small = {"x": np.eye(1500, dtype=np.float32)}   # the next run starts another child, and runs whole
    np.testing.assert_array_equal(ort_worker.run(_slow_model(2).SerializeToString(), None, small, 60)["y"], small["x"])
