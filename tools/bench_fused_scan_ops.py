"""ONNX Runtime's own fused recurrence ops against the compiler's scan forms, on one VMamba scan.

    python -m tools.bench_fused_scan_ops --threads 2            # a VMamba-T stage-0 scan: 4 x 192 channels, 3,136 steps

ONNX Runtime (1.32 and later) ships com.microsoft contrib ops with CPU kernels for gated linear
recurrences. With `update_rule='gated'`, GatedDeltaNet and LinearAttention compute
    S_t = exp(g_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t
which is VMamba's d_state-1 selective scan when every channel is a value head of size 1
(g = dt * A, v = dt * x), B and C are the directions' key and query heads of size 1 (GatedDeltaNet
shares each of them across a direction's channels, inverse grouped heads; LinearAttention takes
one key per value head, so B is repeated) and the scale is 1. This tool builds one such scan four
ways: the `parallel` form (the cpu pipeline's), `window-doubling` (cpu-many's), and the two contrib
ops, checks each against a float64 sequential scan, and times them interleaved (docs/BENCHMARKS.md,
session s22: the contrib ops were exact and 3.6-4.1x slower than `parallel` on 2 threads, so the
compiler does not emit them). The contrib ops get their inputs token-major for free, which favours them.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

from passes.graph_builder import GraphBuilder
from passes.one_line import OneLineArgumentParser, positive_int
from passes.relative_error import relative_l2
from passes.scan_forms.decays import Decays
from passes.scan_forms.parallel import parallel_states
from passes.scan_forms.window_doubling import window_doubling_states

OPSET = 17
CONTRIB = "com.microsoft"


def form_model(form: str, directions: int, channels: int, length: int) -> onnx.ModelProto:
    """Our form of the scan, drive (B * dt x) and readout (C * h) included, channels-first as in the cpu graph."""
    graph = gs.Graph(opset=OPSET)
    shape = [1, directions, channels, length]
    log_decays, drive_x = (gs.Variable(name, np.float32, shape) for name in ("log_decays", "drive_x"))
    b, c = (gs.Variable(name, np.float32, [1, directions, 1, length]) for name in ("B", "C"))
    graph.inputs = [log_decays, drive_x, b, c]
    builder = GraphBuilder(graph, OPSET, "scan")
    decays = Decays.of(builder, builder.exp(log_decays))
    drive = builder.mul(drive_x, b)
    if form == "parallel":
        states = parallel_states(builder, decays=decays, drive=drive, initial=None, axis=3, length=length, chunk=8, rank=4)
    else:
        states = window_doubling_states(builder, decays=decays, drive=drive, initial=None, axis=3, length=length,
                                        chunk=16, rank=4)
    readout = builder.mul(states, c)
    readout.dtype, readout.shape = np.float32, shape
    graph.outputs = [readout]
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def _contrib_model(node: onnx.NodeProto, inputs: list, outputs: list) -> onnx.ModelProto:
    graph = helper.make_graph([node], "fused_scan", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(CONTRIB, 1)])


def gated_delta_net_model(directions: int, channels: int, length: int) -> onnx.ModelProto:
    heads = directions * channels
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [length, directions, 1]),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, [length, directions, 1]),
              helper.make_tensor_value_info("v", TensorProto.FLOAT, [length, heads, 1]),
              helper.make_tensor_value_info("g", TensorProto.FLOAT, [length, heads]),
              helper.make_tensor_value_info("initial", TensorProto.FLOAT, [1, heads, 1, 1])]
    node = helper.make_node("GatedDeltaNet", ["q", "k", "v", "", "g", "", "initial"], ["out"], domain=CONTRIB,
                            update_rule="gated", scale=1.0)
    return _contrib_model(node, inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])


def linear_attention_model(directions: int, channels: int, length: int) -> onnx.ModelProto:
    heads = directions * channels
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, length, directions]),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, length, heads]),
              helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, length, heads]),
              helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, length, heads])]
    node = helper.make_node("LinearAttention", ["q", "k", "v", "", "g"], ["out", "state"], domain=CONTRIB,
                            update_rule="gated", scale=1.0, q_num_heads=directions, kv_num_heads=heads)
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("out", "state")]
    return _contrib_model(node, inputs, outputs)


def sample(directions: int, channels: int, length: int, seed: int = 0) -> dict:
    """Log decays in (-inf, 0] (dt * A, A < 0), drives and the directions' B and C."""
    rng = np.random.default_rng(seed)
    shape = (1, directions, channels, length)
    return {"log_decays": (-0.2 * np.abs(rng.standard_normal(shape))).astype(np.float32),
            "drive_x": rng.standard_normal(shape).astype(np.float32),
            "B": rng.standard_normal((1, directions, 1, length)).astype(np.float32),
            "C": rng.standard_normal((1, directions, 1, length)).astype(np.float32)}


def reference(data: dict) -> np.ndarray:
    """The sequential scan in float64: (directions, channels, length)."""
    log_decays, drive_x = data["log_decays"][0].astype(np.float64), data["drive_x"][0].astype(np.float64)
    b, c = data["B"][0].astype(np.float64), data["C"][0].astype(np.float64)
    state, out = np.zeros(log_decays.shape[:2]), np.zeros(log_decays.shape)
    for t in range(log_decays.shape[2]):
        state = np.exp(log_decays[:, :, t]) * state + drive_x[:, :, t] * b[:, :, t]
        out[:, :, t] = state * c[:, :, t]
    return out


def feeds_for(kind: str, data: dict) -> dict:
    if kind in ("parallel", "window-doubling"):
        return data
    directions, channels, length = data["drive_x"].shape[1:]

    def token_major(x: np.ndarray) -> np.ndarray:  # (1, directions, n, length) -> (length, directions * n)
        return np.ascontiguousarray(x[0].reshape(-1, length).T)

    q, k, v, g = (token_major(data[name]) for name in ("C", "B", "drive_x", "log_decays"))
    if kind == "GatedDeltaNet":
        heads = directions * channels
        return {"q": q[:, :, None], "k": k[:, :, None], "v": v[:, :, None], "g": g,
                "initial": np.zeros((1, heads, 1, 1), np.float32)}
    return {"q": q[None], "k": np.repeat(k, channels, axis=1)[None], "v": v[None], "g": g[None]}


def as_directions_channels_length(kind: str, out: np.ndarray, directions: int, channels: int, length: int) -> np.ndarray:
    if kind in ("parallel", "window-doubling"):
        return out.reshape(directions, channels, length)
    return out.reshape(length, directions, channels).transpose(1, 2, 0)


def build(directions: int, channels: int, length: int) -> dict:
    return {"parallel": form_model("parallel", directions, channels, length),
            "window-doubling": form_model("window-doubling", directions, channels, length),
            "GatedDeltaNet": gated_delta_net_model(directions, channels, length),
            "LinearAttention": linear_attention_model(directions, channels, length)}


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.bench_fused_scan_ops", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--rounds", type=positive_int, default=25, help="interleaved timed rounds")
    parser.add_argument("--directions", type=positive_int, default=4)
    parser.add_argument("--channels", type=positive_int, default=192, help="channels per direction")
    parser.add_argument("--length", type=positive_int, default=3136, help="scan steps")
    args = parser.parse_args(argv)
    if args.directions * args.channels * args.length > 2 ** 26:
        parser.error("directions x channels x length is over 2^26 elements")
    models = build(args.directions, args.channels, args.length)
    data = sample(args.directions, args.channels, args.length)
    expected = reference(data)
    sessions, errors = {}, {}
    for kind, model in models.items():
        try:
            sessions[kind] = session(model, args.threads)
        except Exception as error:  # an ONNX Runtime without the contrib kernel: say so, time the rest
            print(f"{kind}: not run by ONNX Runtime {ort.__version__} ({str(error).splitlines()[0][:200]})",
                  file=sys.stderr)
            continue
        out = sessions[kind].run(None, feeds_for(kind, data))[0]
        got = as_directions_channels_length(kind, out, args.directions, args.channels, args.length)
        errors[kind] = relative_l2(got, expected)
    times = {kind: [] for kind in sessions}
    kinds = list(sessions)
    for round_index in range(args.rounds):
        shift = round_index % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            feeds = feeds_for(kind, data)
            started = time.perf_counter()
            sessions[kind].run(None, feeds)
            times[kind].append(time.perf_counter() - started)
    baseline = float(np.median(times["parallel"]))
    table = Table(title=f"one scan: {args.directions} x {args.channels} channels, {args.length} steps; ONNX Runtime "
                        f"{ort.__version__}, {args.threads} threads, spinning off, medians of {args.rounds} interleaved rounds")
    for column in ("form", "nodes", "median ms", "min ms", "vs parallel", "rel L2 vs float64"):
        table.add_column(column, justify="left" if column == "form" else "right")
    for kind in kinds:
        median = float(np.median(times[kind]))
        table.add_row(kind, str(len(models[kind].graph.node)), f"{median * 1e3:.2f}", f"{min(times[kind]) * 1e3:.2f}",
                      f"{baseline / median:.2f}x", f"{errors[kind]:.1e}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))
