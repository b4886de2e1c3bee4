"""Synthetic unrolled recurrences, written the ways exporters write them, plus near-misses (for tests and benchmarks).

`unrolled_scan_model(...)` returns an ONNX model computing, for inputs
  log_a (B, D, L, N) -> a = Exp(log_a), b (B, D, L, N), c (B, D, N, L), [h0 (B, D, N)]:
    x_i = a[:, :, i] * x_{i-1} + b[:, :, i];   y[:, :, i] = sum_n x_i * c[:, :, :, i]
with the per-step ops spelled out, like torch.onnx.export's unrolling of a Python loop; with
direction "backward" the loop runs i = L-1 .. 0 (`for t in reversed(range(L))`, x_{i+1} before x_i),
its outputs stacked by position (`ys[t] = y`) or, with stacked "by_step", in the loop's order.
`numpy_scan` is the sequential reference it must equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper


@dataclass
class ScanSpec:
    length: int = 7
    channels: int = 3
    state: int = 2               # N
    batch: Optional[int] = 1     # None: dynamic batch ("batch")
    index: str = "gather"        # gather | slice | guarded_slice (opset-12 dynamic-shape export: If around Squeeze)
                                 # | split (TorchScript's unbind: one Split into L pieces per tensor, each squeezed)
    readout: str = "einsum"      # einsum | mulsum | conv (static batch only) | states | mulsum-skip (mulsum + e_i:
                                 # a per-step subgraph with a second stepped read, `+ x[:, t]`, at the step's position)
    initial: str = "zeros"       # zeros | input | drive (no first step: x at the first position is b there, `h = b[:, 0]`)
    decay: str = "exp"           # exp (a = Exp(log_a)) | direct (a is an input) | tanh (a = Tanh(a_in): any sign)
    opset: int = 17
    near_miss: str = ""          # "" or one of NEAR_MISSES
    near_miss_step: Optional[int] = None   # the step the near-miss starts at (default: see NEAR_MISS_DEFAULT_STEP)
    extra_final_state_output: bool = False
    direction: str = "forward"   # forward (positions 0 .. L-1) | backward (L-1 .. 0, a backward scan)
    stacked: str = "by_position"  # by_position (y at position 0 first) | by_step (the first step's y first)
    states_too: bool = False     # the states also stacked as they are, in the y's order (output "states"; hs.append(h))
    first: int = 0               # the lowest position the steps take (`for t in range(1, L)`: 1)
    axis_size: Optional[int] = None   # the positions the inputs' step axis holds (None: first + length + offsets)
    # The step at position p reads a, b and c at p + these (`h = a[t + 1] * h + b[t]`: decay_offset 1; first must be
    # at least -min of them)
    decay_offset: int = 0
    drive_offset: int = 0
    coeff_offset: int = 0
    # Steps (in step order) where the state restarts, a segment boundary of packed sequences: x = b there ("drive",
    # `h = b[t]`) or a step from a zeros constant ("zeros", `h = zeros_like(h)` before the step); one chain per
    # segment, their readouts in the one stack
    restarts: tuple = ()
    restart: str = "drive"
    # A masked step, `h = torch.where(m[:, t, None, None], a h + b, h)` (padding masks; input "m", bool (B, L)): "then"
    # the step in the Where's then branch, "else" `torch.where(~m[..], h, a h + b)` (a Not, the step in the else
    # branch); mask_spelling how m_t is broadcast: "unsqueeze" (two Unsqueezes, as TorchScript traces [:, t, None,
    # None]), "reshape" (m[:, t].view(B, 1, 1)), "blend" or "delta" (a float mask, "m" float (B, L) of 0s and 1s,
    # `m_t * (a h + b) + (1 - m_t) * h` or `h + m_t * (a h + b - h)`, m_t broadcast by Unsqueezes; mask "then") or
    # "constant" (a mask fixed at export, `constant_mask`, one bool
    # Constant per step, as TorchScript folds it; no input "m"); mask_kept "other" keeps h0 (input) instead of h: no
    # masked step
    mask: str = ""
    mask_spelling: str = "unsqueeze"
    mask_kept: str = "state"
    # the steps (in step order) that are masked, the others plain linear steps (a mask on some positions only: a
    # prefix never padded, left padding of at most k positions); None: every step
    masked_steps: Optional[tuple] = None
    # "index_copy": the readouts written into a zeros buffer, `y = y.index_copy(2, t, y_t[..., None])`, as TorchScript
    # traces it (a ScatterElements per step, its indices Expand(t, a shape computed from Shape(y))), not stacked
    write: str = ""

    @property
    def positions(self) -> int:
        """How many positions the inputs' step axis holds."""
        if self.axis_size is not None:
            return self.axis_size
        return self.first + self.length + max(0, self.decay_offset, self.drive_offset, self.coeff_offset)


# ScanSpec.mask_spelling of a float mask; "blend-cast": "m" bool, m_t = Cast(its step, to float), `m.float()`
FLOAT_MASKS = ("blend", "delta", "blend-cast")

# Each breaks the recurrence at one step; `near_miss_steps(kind, L)` is where it can happen.
NEAR_MISSES = ("skip_index", "repeat_index", "state_used_elsewhere", "two_decays",
               "coeff_off_by_one", "concat_permuted", "missing_readout")


def near_miss_steps(kind: str, length: int) -> range:
    """Steps where `kind` makes a real difference in a chain of `length` (>= 3) steps."""
    if kind in ("skip_index", "state_used_elsewhere", "concat_permuted"):
        return range(0, length - 1)   # needs a step after it (the last state may escape legitimately)
    if kind == "repeat_index":
        return range(1, length)
    return range(0, length)


def _default_near_miss_step(spec: "ScanSpec") -> int:
    return 1 if spec.near_miss == "state_used_elsewhere" else spec.length // 2


class _Graph:
    def __init__(self, opset: int, length: int = 0) -> None:
        self.opset, self.nodes, self.inits, self.count = opset, [], [], 0
        self.length = length                 # pieces of a "split" step form
        self.pieces: dict[tuple, list] = {}  # (source, axis) -> its Split's outputs

    def name(self, op: str) -> str:
        self.count += 1
        return f"{op}_{self.count}"

    def node(self, op, inputs, **attrs) -> str:
        name = self.name(op)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(self, value) -> str:
        name = self.name("const")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name,
                                           value=onnx.numpy_helper.from_array(np.asarray(value), name)))
        return name

    def axes_op(self, op, x, axes, **attrs) -> str:
        if self.opset >= 13 or (op == "ReduceSum" and self.opset >= 13):
            return self.node(op, [x, self.const(np.array(axes, dtype=np.int64))], **attrs)
        return self.node(op, [x], axes=axes, **attrs)

    def step(self, source, axis, index, form) -> str:
        if form == "split":   # x.unbind(axis): sizes as an input from opset 13 (opset 18: num_outputs, no sizes)
            if (source, axis) not in self.pieces:
                name = self.name("Split")
                outputs = [f"{name}_{i}" for i in range(self.length)]
                if self.opset >= 18:
                    node = helper.make_node("Split", [source], outputs, name=name, axis=axis, num_outputs=self.length)
                elif self.opset >= 13:
                    sizes = self.const(np.ones(self.length, dtype=np.int64))
                    node = helper.make_node("Split", [source, sizes], outputs, name=name, axis=axis)
                else:
                    node = helper.make_node("Split", [source], outputs, name=name, axis=axis, split=[1] * self.length)
                self.nodes.append(node)
                self.pieces[source, axis] = outputs
            return self.axes_op("Squeeze", self.pieces[source, axis][index], [axis])
        if form == "gather":
            return self.node("Gather", [source, self.const(np.array(index, dtype=np.int64))], axis=axis)
        sliced = self.node("Slice", [source, self.const(np.array([index], dtype=np.int64)),
                                     self.const(np.array([index + 1], dtype=np.int64)),
                                     self.const(np.array([axis], dtype=np.int64))])
        if form == "guarded_slice":
            return self.guarded_squeeze(sliced, axis)
        return self.axes_op("Squeeze", sliced, [axis])

    def guarded_squeeze(self, x, axis, guard_axis=None, else_op="Identity") -> str:
        """x.squeeze(axis) as TorchScript exports it at opset < 13 when shapes are symbolic:
        If(Shape(x)[axis] == 1) then Squeeze(x, [axis]) else Identity(x)."""
        size = self.node("Gather", [self.node("Shape", [x]),
                                    self.const(np.array(axis if guard_axis is None else guard_axis, dtype=np.int64))],
                         axis=0)
        condition = self.node("Equal", [size, self.const(np.array(1, dtype=np.int64))])
        squeezed, passed = self.name("Squeeze"), self.name(else_op)
        then_nodes = []
        if self.opset >= 13:   # the axes are a Constant node inside the branch, as torch writes them
            axes = self.name("axes")
            then_nodes.append(helper.make_node("Constant", [], [axes], name=axes, value=onnx.numpy_helper.from_array(
                np.array([axis], dtype=np.int64), axes)))
            then_nodes.append(helper.make_node("Squeeze", [x, axes], [squeezed], name=squeezed))
        else:
            then_nodes.append(helper.make_node("Squeeze", [x], [squeezed], name=squeezed, axes=[axis]))
        else_node = helper.make_node(else_op, [x], [passed], name=passed)
        out_info = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        then_graph = helper.make_graph(then_nodes, f"then_{squeezed}", [], [out_info(squeezed)])
        else_graph = helper.make_graph([else_node], f"else_{passed}", [], [out_info(passed)])
        return self.node("If", [condition], then_branch=then_graph, else_branch=else_graph)


def unrolled_scan_model(spec: ScanSpec) -> onnx.ModelProto:
    g = _Graph(spec.opset, spec.positions)
    batch = spec.batch if spec.batch is not None else "batch"
    D, L, N = spec.channels, spec.length, spec.state
    inputs = [
        helper.make_tensor_value_info("a_in", TensorProto.FLOAT, [batch, D, spec.positions, N]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, [batch, D, spec.positions, N]),
    ]
    if spec.readout != "states":
        inputs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [batch, D, N, spec.positions]))
    if spec.initial == "input":
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [batch, D, N]))
    if spec.readout == "mulsum-skip":
        inputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [batch, D, spec.positions]))
    if spec.mask and spec.mask_spelling != "constant":
        inputs.append(helper.make_tensor_value_info(
            "m", TensorProto.FLOAT if spec.mask_spelling in ("blend", "delta") else TensorProto.BOOL,
            [batch, spec.positions]))
    if spec.mask_kept == "other":
        inputs.append(helper.make_tensor_value_info("h_other", TensorProto.FLOAT, [batch, D, N]))
    decay = {"exp": lambda: g.node("Exp", ["a_in"]), "tanh": lambda: g.node("Tanh", ["a_in"]),
             "direct": lambda: "a_in"}[spec.decay]()
    other_decay = g.node("Exp", [g.node("Neg", ["a_in"])]) if spec.near_miss == "two_decays" else decay

    if spec.initial == "input":
        state = "h0"
    elif spec.initial == "drive":
        state = None
    else:
        zeros_shape = [spec.batch or 1, D, N]
        state = g.const(np.zeros(zeros_shape, dtype=np.float32))
    if spec.near_miss and spec.near_miss not in NEAR_MISSES:
        raise ValueError(f"unknown near miss {spec.near_miss!r} (known: {', '.join(NEAR_MISSES)})")
    miss = spec.near_miss_step if spec.near_miss_step is not None else _default_near_miss_step(spec)
    if spec.direction not in ("forward", "backward") or spec.stacked not in ("by_position", "by_step"):
        raise ValueError(f"unknown direction {spec.direction!r} or stacked {spec.stacked!r}")
    # The step taking position i (the near-misses below change a step's index the same way either way).
    position = (lambda i: spec.first + L - 1 - i) if spec.direction == "backward" else (lambda i: spec.first + i)
    pieces, outputs, extra, state_pieces = [], [], [], []
    for i in range(L):
        index = i
        if spec.near_miss == "skip_index" and i >= miss:
            index = min(i + 1, L - 1)
        if spec.near_miss == "repeat_index" and i == miss:
            index = i - 1
        source = other_decay if (spec.near_miss == "two_decays" and i == miss) else decay
        if i in spec.restarts:
            state = None if spec.restart == "drive" else g.const(np.zeros([spec.batch or 1, D, N], dtype=np.float32))
        if state is None:   # initial "drive": x = b at the first position, no step
            state = g.step("b", 2, position(i) + spec.drive_offset, spec.index)
        else:
            a_i = g.step(source, 2, position(index) + spec.decay_offset, spec.index)
            b_i = g.step("b", 2, position(i) + spec.drive_offset, spec.index)
            stepped = g.node("Add", [g.node("Mul", [a_i, state]), b_i])
            state = (_masked(g, spec, position(i), stepped, state, i == 0 and spec.initial == "zeros")
                     if spec.mask and (spec.masked_steps is None or i in spec.masked_steps) else stepped)
        if spec.near_miss == "state_used_elsewhere" and i == miss:
            extra.append(g.node("Relu", [state]))
        if spec.near_miss == "missing_readout" and i == miss:
            continue   # this step's state is never read out (nor stacked)
        if spec.states_too:
            state_pieces.append(g.axes_op("Unsqueeze", state, [2]))
        if spec.readout == "states":
            y = state
        else:
            coeff_index = i
            if spec.near_miss == "coeff_off_by_one" and i == miss:
                coeff_index = i + 1 if i + 1 < L else i - 1
            c_i = g.step("c", 3, position(coeff_index) + spec.coeff_offset, spec.index)
            if spec.readout == "einsum":
                y = g.node("Einsum", [state, c_i], equation="bdn,bdn->bd")
            elif spec.readout == "conv":  # the public fork's "no_einsum" grouped conv1d
                groups = spec.batch * D
                flat = g.node("Reshape", [state, g.const(np.array([1, groups, N], dtype=np.int64))])
                weight = g.node("Reshape", [c_i, g.const(np.array([groups, 1, N], dtype=np.int64))])
                conv = g.node("Conv", [flat, weight], group=groups, kernel_shape=[N])
                y = g.node("Reshape", [conv, g.const(np.array([spec.batch, D], dtype=np.int64))])
            else:
                y = g.axes_op("ReduceSum", g.node("Mul", [state, c_i]), [-1], keepdims=0)
            if spec.readout == "mulsum-skip":
                y = g.node("Add", [y, g.step("e", 2, position(i), spec.index)])
        pieces.append(g.axes_op("Unsqueeze", y, [2]))
    if spec.near_miss == "concat_permuted":
        pieces[miss], pieces[miss + 1] = pieces[miss + 1], pieces[miss]
    if spec.direction == "backward" and spec.stacked == "by_position":
        pieces.reverse()
        state_pieces.reverse()
    if spec.write == "index_copy":
        _index_copies(g, spec, pieces, position)
    else:
        g.nodes.append(helper.make_node("Concat", pieces, ["y"], name="stack", axis=2))
    stacked = L - (spec.near_miss == "missing_readout")
    y_shape = [batch, D, stacked] if spec.readout != "states" else [batch, D, stacked, N]
    outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape))
    if spec.states_too:
        g.nodes.append(helper.make_node("Concat", state_pieces, ["states"], name="states_stack", axis=2))
        outputs.append(helper.make_tensor_value_info("states", TensorProto.FLOAT, [batch, D, len(state_pieces), N]))
    if spec.extra_final_state_output:
        g.nodes.append(helper.make_node("Identity", [state], ["final_state"], name="final_state_copy"))
        outputs.append(helper.make_tensor_value_info("final_state", TensorProto.FLOAT, [batch, D, N]))
    for name in extra:
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, D, N]))
    graph = helper.make_graph(g.nodes, "unrolled_scan", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec.opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _masked(g: _Graph, spec: ScanSpec, position: int, stepped: str, state: str, zeros: bool) -> str:
    """torch.where(m[:, p, None, None], stepped, state) as a trace writes it (or with ~m and the branches swapped); the
    zeros a first step multiplies kept as a Constant of their own, as TorchScript writes them."""
    if spec.mask not in ("then", "else") or spec.mask_spelling not in ("unsqueeze", "reshape", "constant", *FLOAT_MASKS):
        raise ValueError(f"unknown mask {spec.mask!r} or mask_spelling {spec.mask_spelling!r}")
    m_t = g.step("m", 1, position, "gather") if spec.mask_spelling != "constant" else None
    if spec.mask_spelling == "constant":
        cond = g.const(constant_mask(spec)[:, position, None, None])
    elif spec.mask_spelling in ("unsqueeze", *FLOAT_MASKS):
        cond = g.axes_op("Unsqueeze", g.axes_op("Unsqueeze", m_t, [1]), [2])
    else:
        cond = g.node("Reshape", [m_t, g.const(np.array([-1, 1, 1], dtype=np.int64))])
    kept = state
    if spec.mask_kept == "other":
        kept = "h_other"
    elif zeros:   # the first step's zeros: kept as another Constant
        kept = g.const(np.zeros([spec.batch or 1, spec.channels, spec.state], dtype=np.float32))
    if spec.mask_spelling == "blend-cast":
        cond = g.node("Cast", [cond], to=TensorProto.FLOAT)
    if spec.mask_spelling in ("blend", "blend-cast"):
        one_minus = g.node("Sub", [g.const(np.array(1, np.float32)), cond])
        return g.node("Add", [g.node("Mul", [cond, stepped]), g.node("Mul", [one_minus, kept])])
    if spec.mask_spelling == "delta":
        return g.node("Add", [kept, g.node("Mul", [cond, g.node("Sub", [stepped, kept])])])
    if spec.mask == "then":
        return g.node("Where", [cond, stepped, kept])
    return g.node("Where", [g.node("Not", [cond]), kept, stepped])


def _index_copies(g: _Graph, spec: ScanSpec, pieces: list, position) -> None:
    """y = zeros, then y = y.index_copy(2, p, piece) for each piece (B, D, 1) at its position p, as TorchScript
    writes it: ScatterElements(y, Expand(p, Where(Equal(s, -1), 1, s)), piece, axis=2), s = ScatterElements(Shape(y), [2],
    [1]) (the piece's shape); the last write's output is "y"."""
    if spec.batch is None or spec.stacked != "by_position" or spec.readout == "states" or spec.near_miss:
        raise ValueError("index_copy writes: a static batch, readouts stacked by position, no near miss")
    buffer = g.const(np.zeros([spec.batch, spec.channels, spec.length], dtype=np.float32))
    for p, piece in enumerate(pieces):   # (in position order: a backward chain's were reversed)
        shape = g.node("ScatterElements", [g.node("Shape", [buffer]), g.const(np.array([2], np.int64)),
                                           g.const(np.array([1], np.int64))], axis=0)
        minus = g.node("Equal", [shape, g.const(np.full(3, -1, np.int64))])
        target = g.node("Where", [minus, g.const(np.ones(3, np.int64)), shape])
        index = g.node("Expand", [g.const(np.full((1, 1, 1), p, np.int64)), target])
        name = "y" if p == len(pieces) - 1 else g.name("index_copy")
        g.nodes.append(helper.make_node("ScatterElements", [buffer, index, piece], [name], name=name, axis=2))
        buffer = name


def constant_mask(spec: ScanSpec) -> np.ndarray:
    """The mask of mask_spelling "constant" (batch or 1, positions): fixed, about a third of the steps off."""
    return np.random.default_rng(7).uniform(0, 1, (spec.batch or 1, spec.positions)) > 0.35


def scan_inputs(spec: ScanSpec, seed: int = 0, batch: int = 1, decay_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Inputs with Mamba-like statistics: log decays dt*A <= 0, a few percent of unit size."""
    rng = np.random.default_rng(seed)
    D, L, N = spec.channels, spec.positions, spec.state
    log_a = -rng.uniform(0.001, 0.2, (batch, D, L, N)) * decay_scale
    feeds = {
        # tanh: decays of both signs and |a| up to 0.96, so every step flips some states' sign.
        "a_in": {"exp": log_a, "direct": np.exp(log_a),
                 "tanh": rng.uniform(-2.0, 2.0, log_a.shape)}[spec.decay].astype(np.float32),
        "b": rng.standard_normal((batch, D, L, N)).astype(np.float32),
    }
    if spec.readout != "states":
        feeds["c"] = rng.standard_normal((batch, D, N, L)).astype(np.float32)
    if spec.initial == "input":
        feeds["h0"] = rng.standard_normal((batch, D, N)).astype(np.float32)
    if spec.readout == "mulsum-skip":
        feeds["e"] = rng.standard_normal((batch, D, L)).astype(np.float32)
    if spec.mask and spec.mask_spelling != "constant":   # about a third of the steps masked off
        feeds["m"] = rng.uniform(0, 1, (batch, L)) > 0.35
        if spec.mask_spelling in ("blend", "delta"):
            feeds["m"] = feeds["m"].astype(np.float32)
    if spec.mask_kept == "other":
        feeds["h_other"] = rng.standard_normal((batch, D, spec.state)).astype(np.float32)
    return feeds


def numpy_scan(spec: ScanSpec, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The sequential recurrence in float64."""
    a = feeds["a_in"].astype(np.float64)
    a = {"exp": np.exp, "tanh": np.tanh}.get(spec.decay, lambda x: x)(a)
    b = feeds["b"].astype(np.float64)
    state = feeds["h0"].astype(np.float64) if spec.initial == "input" else np.zeros(a.shape[:2] + a.shape[3:])
    outs = []
    positions = range(spec.first, spec.first + spec.length)
    positions = positions[::-1] if spec.direction == "backward" else positions
    first = True
    for step, i in enumerate(positions):
        drive = b[:, :, i + spec.drive_offset]
        restarts = step in spec.restarts or (first and spec.initial == "drive")
        stepped = drive if restarts else a[:, :, i + spec.decay_offset] * state + drive
        if spec.mask and not (first and spec.initial == "drive") and (spec.masked_steps is None
                                                                       or step in spec.masked_steps):
            kept = feeds["h_other"].astype(np.float64) if spec.mask_kept == "other" else state
            mask = feeds["m"] if spec.mask_spelling != "constant" else constant_mask(spec)
            if spec.mask_spelling in FLOAT_MASKS:   # (the spelling's own arithmetic, in float64: a soft mask too)
                m = mask[:, i, None, None].astype(np.float64)
                stepped = m * stepped + (1 - m) * kept if spec.mask_spelling != "delta" else kept + m * (stepped - kept)
            else:
                stepped = np.where(mask[:, i, None, None], stepped, kept)
        state = stepped
        first = False
        coeff = feeds["c"][..., i + spec.coeff_offset].astype(np.float64) if spec.readout != "states" else None
        y = state if spec.readout == "states" else np.einsum("bdn,bdn->bd", state, coeff)
        outs.append(y + feeds["e"][:, :, i].astype(np.float64) if spec.readout == "mulsum-skip" else y)
    if spec.direction == "backward" and spec.stacked == "by_position":
        outs.reverse()
    return np.stack(outs, axis=2)
