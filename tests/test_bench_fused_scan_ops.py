"""tools.bench_fused_scan_ops: the four spellings of one VMamba scan compute the scan.

The benchmark's claim (docs/BENCHMARKS.md, s22) is that ONNX Runtime's GatedDeltaNet and
LinearAttention are VMamba's d_state-1 scan under the tool's mapping; these tests hold each
spelling to a float64 sequential scan, with decays far enough from 1 that a state carried one step
off, a head mapped to the wrong direction or B and C swapped shows up."""
import re

import numpy as np
import pytest

from passes.relative_error import relative_l2
from tools import bench_fused_scan_ops as tool

KINDS = ("parallel", "window-doubling", "GatedDeltaNet", "LinearAttention")


def run(kind: str, model, data: dict) -> np.ndarray:
    session = tool.session(model, threads=1)
    out = session.run(None, tool.feeds_for(kind, data))[0]
    directions, channels, length = data["drive_x"].shape[1:]
    return tool.as_directions_channels_length(kind, out, directions, channels, length)


@pytest.mark.parametrize("length", [5, 16, 37])
def test_every_spelling_is_the_scan(length):
    directions, channels = 3, 4
    data = tool.sample(directions, channels, length, seed=length)
    data["log_decays"] = np.clip(data["log_decays"] * 5, -2.0, -0.5).astype(np.float32)  # decays 0.13-0.6
    expected = tool.reference(data)
    models = tool.build(directions, channels, length)
    for kind in KINDS:
        got = run(kind, models[kind], data)
        error = relative_l2(got, expected)
        assert error <= 1e-6, (kind, error)


def test_the_reference_is_the_recurrence():
    data = tool.sample(1, 1, 3, seed=1)
    a = np.exp(data["log_decays"][0, 0, 0].astype(np.float64))
    bx, b, c = (data[name][0, 0, 0].astype(np.float64) for name in ("drive_x", "B", "C"))
    h0 = bx[0] * b[0]
    h1 = a[1] * h0 + bx[1] * b[1]
    h2 = a[2] * h1 + bx[2] * b[2]
    np.testing.assert_allclose(tool.reference(data)[0, 0], [h0 * c[0], h1 * c[1], h2 * c[2]], rtol=1e-12)


def test_the_contrib_ops_are_single_nodes_and_the_forms_are_not():
    models = tool.build(4, 8, 37)
    assert [node.op_type for node in models["GatedDeltaNet"].graph.node] == ["GatedDeltaNet"]
    assert [node.op_type for node in models["LinearAttention"].graph.node] == ["LinearAttention"]
    assert {node.domain for node in models["GatedDeltaNet"].graph.node} == {"com.microsoft"}
    for form in ("parallel", "window-doubling"):
        assert len(models[form].graph.node) > 20
        assert {node.domain for node in models[form].graph.node} == {""}


def test_the_table_names_every_spelling_with_its_error(capsys):
    assert tool.main(["--channels", "4", "--length", "20", "--rounds", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        line = next(line for line in out.splitlines() if line.startswith(f"│ {kind} "))
        error = float(re.findall(r"\d\.\de-\d\d", line)[-1])  # the rel L2 column, e.g. 7.3e-08
        assert 0 < error <= 1e-6, line


def test_too_large_a_scan_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--channels", "4096", "--length", "8192"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: directions x channels x length is over 2^26 elements (see --help)"
