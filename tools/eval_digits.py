"""Reproduce the embedded digits model's held-out accuracy.

    python -m tools.eval_digits                      # PyTorch, embedded weights, sequential scan
    python -m tools.eval_digits --onnx out/x.onnx    # onnxruntime on any model whose input is "input"
    python -m tools.eval_digits --scan chunked --ckpt other.pt

Prints the accuracy and whether it equals the value recorded in micro_digits.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from passes.one_line import OneLineArgumentParser, one_line, positive_int


def onnx_predict(onnx_path: str | Path, x: np.ndarray, batch: int = 100, input_name: str = "input") -> np.ndarray:
    """Logits from ONNX Runtime, batch by batch; one image at a time if the batch axis is static 1.

    ONNX Runtime runs in a child process under verification's memory cap (passes.ort_worker.call_capped):
    in this one its native work held off SIGTERM and Ctrl-C (a Loop whose trip count came from the
    images ran for ever) and a size computed from the images' values took what it asked for.
    ValueError (one line) for a model it cannot run. The model is read here once (its external data from its folder
    only) and ONNX Runtime given its bytes, not the path, which it would open again (adv23: a named pipe put there
    after the check held the tool for ever)."""
    from passes.graph_io import InputError
    from passes.model_check import model_for_runtime
    from passes.ort_worker import ChildFailed, call_capped

    try:   # local functions refused too: ONNX Runtime would inline them in native code, past SIGTERM
        data = model_for_runtime(onnx_path)
    except InputError as error:
        raise ValueError(str(error)) from None
    try:
        return call_capped(_predict_here, str(onnx_path), x, batch, input_name, data)
    except ChildFailed as error:
        raise ValueError(str(error)) from None


def _predict_here(onnx_path: str, x: np.ndarray, batch: int, input_name: str, data: bytes | None = None) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4   # ORT's own error log holds node names raw (an ESC, a newline); its exception says the same
    sess = ort.InferenceSession(onnx_path if data is None else data, so, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    if input_name not in inputs:
        raise ValueError(f"{onnx_path}: no input named {input_name!r} (inputs: {', '.join(inputs)})")
    dim0 = inputs[input_name].shape[0]
    if isinstance(dim0, int):
        batch = dim0     # static batch axis: feed exactly that many
    out_name = sess.get_outputs()[0].name
    chunks = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if len(xb) < batch and isinstance(dim0, int):   # pad the last static batch, drop the padding after
            pad = np.repeat(xb[-1:], batch - len(xb), axis=0)
            chunks.append(sess.run([out_name], {input_name: np.concatenate([xb, pad])})[0][:len(xb)])
        else:
            chunks.append(sess.run([out_name], {input_name: xb})[0])
    return np.concatenate(chunks)


def torch_predict(x: np.ndarray, scan: str = "sequential", ckpt: str | None = None, batch: int = 100) -> np.ndarray:
    import torch

    from vmamba_ref import build_model, default_model, get_config, load_checkpoint

    if ckpt:
        model = build_model(get_config("micro"), scan=scan)
        load_checkpoint(model, ckpt)
    else:
        model = default_model(scan=scan)
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def main(argv=None) -> int:
    ap = OneLineArgumentParser(prog="python -m tools.eval_digits", description="Held-out accuracy of the micro digits model (PyTorch or ONNX).")
    ap.add_argument("--onnx", type=Path, help="evaluate this ONNX model with onnxruntime instead of PyTorch")
    ap.add_argument("--ckpt", help="PyTorch weights to evaluate (default: the embedded ones)")
    ap.add_argument("--scan", default="sequential", choices=["sequential", "chunked", "float64"])
    ap.add_argument("--batch", type=positive_int, default=100)
    args = ap.parse_args(argv)

    from vmamba_ref import DIGITS_META
    from vmamba_ref.digits import load_digits_split

    split = load_digits_split()
    try:
        if args.onnx:
            logits = onnx_predict(args.onnx, split.x_test, args.batch)
            what = f"onnxruntime {args.onnx}"
        else:
            logits = torch_predict(split.x_test, args.scan, args.ckpt, args.batch)
            what = f"PyTorch ({args.scan} scan{', ' + args.ckpt if args.ckpt else ', embedded weights'})"
    except Exception as exc:   # one line for the user: bad file, wrong input name, ...
        print(f"error: {one_line(exc, limit=300)}", file=sys.stderr)
        return 2
    correct = int((logits.argmax(1) == split.y_test).sum())
    acc = correct / len(split.y_test)
    recorded = json.loads(DIGITS_META.read_text())["held_out_accuracy"] if DIGITS_META.exists() else None
    verdict = "" if recorded is None else (" = recorded" if correct == round(recorded * len(split.y_test))
                                           else f" != recorded {recorded:.4f}")
    print(f"{what}: held-out accuracy {acc:.4f} ({correct}/{len(split.y_test)}){verdict}")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))
