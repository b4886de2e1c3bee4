"""RWKV-style loops rescaled by a running maximum, with the knobs that s36 gen24's max-plus scan assumed fixed
(fuzz24's attacks): written with onnx.helper as transformers' `rwkv_linear_attention_cpu` writes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

D = 3
DTYPES = {"float32": (np.float32, TensorProto.FLOAT), "float16": (np.float16, TensorProto.FLOAT16),
          "float64": (np.float64, TensorProto.DOUBLE)}


@dataclass
class Variant:
    length: int
    batch: Optional[int] = None       # None: states [D]; else k, v [L, B, D] and states [B, D]
    dynamic_batch: bool = False       # the batch dimension a symbol
    w_shape: str = "channel"          # "channel" [D], "scalar" [], "broadcast" [1, D] (batch) or [1] (no batch)
    initial: str = "const"            # "const" (-1e38), "input" (a graph input shaped as a state)
    max_first: bool = True            # Max(m + w, k) or Max(k, m + w)
    add_first: bool = True            # Add(m, w) or Add(w, m)
    readout_branch: bool = False      # RWKV's output before the update (reads each state twice)
    extra_reader: Optional[int] = None   # m_t also read by Neg -> a graph output
    state_reader: Optional[int] = None   # num_t also read by an unrelated Neg -> a graph output
    layers: int = 1                   # layers in sequence, sharing m_init, zeros and the index constants
    dtype: str = "float32"


def _state_shape(spec: Variant) -> list:
    return [D] if spec.batch is None else ["B" if spec.dynamic_batch else spec.batch, D]


def variant_model(spec: Variant) -> onnx.ModelProto:
    np_dtype, onnx_dtype = DTYPES[spec.dtype]
    L, state = spec.length, _state_shape(spec)
    seq = [L, *state]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    inputs = [helper.make_tensor_value_info("k", onnx_dtype, seq), helper.make_tensor_value_info("v", onnx_dtype, seq)]
    init_state = np.zeros([D] if spec.batch is None or spec.dynamic_batch else [spec.batch, D], np_dtype)
    inits.append(numpy_helper.from_array(init_state, "zeros"))
    if spec.initial == "const":
        inits.append(numpy_helper.from_array(np.full(init_state.shape, -1e38 if spec.dtype != "float16" else -6e4,
                                                     np_dtype), "m_init"))
    else:
        inputs.append(helper.make_tensor_value_info("m_init", onnx_dtype, state))
    w_shape = {"channel": [D], "scalar": [], "broadcast": [1, D] if spec.batch is not None else [1]}[spec.w_shape]
    outputs, nodes = [], []
    x = "k"
    for layer in range(spec.layers):
        p = f"l{layer}_"
        inputs.append(helper.make_tensor_value_info(f"{p}w", onnx_dtype, w_shape))
        if spec.readout_branch:
            inputs.append(helper.make_tensor_value_info(f"{p}u", onnx_dtype, [D]))
        m, num, den, readouts = "m_init", "zeros", "zeros", []
        for t in range(L):
            if layer == 0:
                inits.append(numpy_helper.from_array(np.array(t, np.int64), f"i{t}"))
            k, v, w = f"{p}k{t}", f"{p}v{t}", f"{p}w"
            nodes += [helper.make_node("Gather", [x, f"i{t}"], [k], name=f"{p}gk{t}"),
                      helper.make_node("Gather", ["v", f"i{t}"], [v], name=f"{p}gv{t}")]
            mw, mt = f"{p}mw{t}", f"{p}m{t}"
            nodes += [helper.make_node("Add", [m, w] if spec.add_first else [w, m], [mw], name=mw),
                      helper.make_node("Max", [mw, k] if spec.max_first else [k, mw], [mt], name=f"{p}max{t}")]
            if spec.readout_branch:
                nodes += [helper.make_node("Add", [k, f"{p}u"], [f"{p}ku{t}"], name=f"{p}ku{t}"),
                          helper.make_node("Max", [m, f"{p}ku{t}"], [f"{p}mo{t}"], name=f"{p}mo{t}"),
                          helper.make_node("Sub", [m, f"{p}mo{t}"], [f"{p}od{t}"], name=f"{p}od{t}"),
                          helper.make_node("Exp", [f"{p}od{t}"], [f"{p}o1_{t}"], name=f"{p}o1_{t}"),
                          helper.make_node("Sub", [f"{p}ku{t}", f"{p}mo{t}"], [f"{p}og{t}"], name=f"{p}og{t}"),
                          helper.make_node("Exp", [f"{p}og{t}"], [f"{p}o2_{t}"], name=f"{p}o2_{t}"),
                          helper.make_node("Mul", [f"{p}o1_{t}", num], [f"{p}on{t}"], name=f"{p}on{t}"),
                          helper.make_node("Mul", [f"{p}o2_{t}", v], [f"{p}ov{t}"], name=f"{p}ov{t}"),
                          helper.make_node("Add", [f"{p}on{t}", f"{p}ov{t}"], [f"{p}onum{t}"], name=f"{p}out_num{t}"),
                          helper.make_node("Mul", [f"{p}o1_{t}", den], [f"{p}odd{t}"], name=f"{p}odd{t}"),
                          helper.make_node("Add", [f"{p}odd{t}", f"{p}o2_{t}"], [f"{p}oden{t}"], name=f"{p}out_den{t}"),
                          helper.make_node("Div", [f"{p}onum{t}", f"{p}oden{t}"], [f"{p}y{t}"], name=f"{p}y{t}")]
            nodes += [helper.make_node("Sub", [mw, mt], [f"{p}d{t}"], name=f"{p}d{t}"),
                      helper.make_node("Exp", [f"{p}d{t}"], [f"{p}e1_{t}"], name=f"{p}e1_{t}"),
                      helper.make_node("Sub", [k, mt], [f"{p}g{t}"], name=f"{p}g{t}"),
                      helper.make_node("Exp", [f"{p}g{t}"], [f"{p}e2_{t}"], name=f"{p}e2_{t}"),
                      helper.make_node("Mul", [f"{p}e1_{t}", num], [f"{p}nd{t}"], name=f"{p}nd{t}"),
                      helper.make_node("Mul", [f"{p}e2_{t}", v], [f"{p}nv{t}"], name=f"{p}nv{t}"),
                      helper.make_node("Add", [f"{p}nd{t}", f"{p}nv{t}"], [f"{p}num{t}"], name=f"{p}num{t}"),
                      helper.make_node("Mul", [f"{p}e1_{t}", den], [f"{p}dd{t}"], name=f"{p}dd{t}"),
                      helper.make_node("Add", [f"{p}dd{t}", f"{p}e2_{t}"], [f"{p}den{t}"], name=f"{p}den{t}")]
            if not spec.readout_branch:
                nodes.append(helper.make_node("Div", [f"{p}num{t}", f"{p}den{t}"], [f"{p}y{t}"], name=f"{p}y{t}"))
            nodes.append(helper.make_node("Unsqueeze", [f"{p}y{t}", "axis0"], [f"{p}yu{t}"], name=f"{p}yu{t}"))
            readouts.append(f"{p}yu{t}")
            if spec.extra_reader == t:
                nodes.append(helper.make_node("Neg", [mt], [f"{p}neg_m{t}"], name=f"{p}neg_m{t}"))
                outputs.append(helper.make_tensor_value_info(f"{p}neg_m{t}", onnx_dtype, state))
            if spec.state_reader == t:
                nodes.append(helper.make_node("Neg", [f"{p}num{t}"], [f"{p}sig{t}"], name=f"{p}sig{t}"))
                outputs.append(helper.make_tensor_value_info(f"{p}sig{t}", onnx_dtype, state))
            m, num, den = mt, f"{p}num{t}", f"{p}den{t}"
        nodes.append(helper.make_node("Concat", readouts, [f"{p}y"], axis=0, name=f"{p}concat_y"))
        x = f"{p}y"
    outputs.insert(0, helper.make_tensor_value_info(x, onnx_dtype, seq))
    graph = helper.make_graph(nodes, "rwkv_variant", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def variant_feeds(spec: Variant, seed: int = 0, k_values: str = "normal") -> dict:
    """k_values: "normal" (3 sigma), "ties" (k_t = m_{t-1} + w exactly where it can be), "neg_inf" (some -inf),
    "huge" (some +-1e30), "wide" (30 sigma), "integers" (small integers, w -1: many exact ties)."""
    np_dtype = DTYPES[spec.dtype][0]
    rng = np.random.default_rng(seed)
    batch = () if spec.batch is None else (spec.batch,)
    seq = (spec.length, *batch, D)
    w_shape = {"channel": (D,), "scalar": (), "broadcast": (1, D) if batch else (1,)}[spec.w_shape]
    feeds = {"v": rng.standard_normal(seq)}
    for layer in range(spec.layers):
        feeds[f"l{layer}_w"] = -np.exp(rng.standard_normal(w_shape))
        feeds[f"l{layer}_u"] = rng.standard_normal(D)
    k = (30 if k_values == "wide" else 3) * rng.standard_normal(seq)
    if k_values == "integers":
        k = rng.integers(-3, 3, seq).astype(np.float64)
        for layer in range(spec.layers):
            feeds[f"l{layer}_w"] = -np.ones(w_shape)
    elif k_values == "ties":   # k_t equal to the previous maximum + w along a run: m + w == k_t exactly
        w = feeds["l0_w"].astype(np_dtype)
        m = np.full((*batch, D), np_dtype(k[0].max()))
        k = k.astype(np_dtype)
        for t in range(1, spec.length):
            if rng.random() < 0.5:
                k[t] = (k[t - 1] + w).astype(np_dtype)
    elif k_values == "neg_inf":
        k[rng.random(seq) < 0.3] = -np.inf
    elif k_values == "huge":
        mask = rng.random(seq)
        k[mask < 0.15] = 1e30 if np_dtype != np.float16 else 6e4
        k[mask > 0.85] = -1e30 if np_dtype != np.float16 else -6e4
    feeds["k"] = k
    feeds["m_init"] = rng.standard_normal((*batch, D))
    return {name: np.asarray(value).astype(np_dtype) for name, value in feeds.items()}
