"""Calibration sets for tpu-mlir's INT8 (tools.tpu_check --quantize INT8 --calibration FILE).

    python -m tools.tpu_calibration digits -o cal.npz [--count 64] [--batch 1]
    python -m tools.tpu_calibration synthetic model.onnx -o cal.npz [--count 8] [--seed 0]

The file holds one array per model input with the samples stacked on a new leading axis
([samples, *input shape]). ``digits``: the first images of the digits *training* split (never
the 500 held-out ones the accuracy is measured on), for micro-digits (input ``input``,
[1, 3, 64, 64]). ``synthetic``: a fixed set of standard-normal inputs (numpy's default_rng with
``--seed``), for models without a data set of their own, e.g. VMamba-T with random weights;
say so where its figures are quoted. An integer input is drawn uniformly from the rows of the
constant table a Gather reads with it (token ids of an embedding: transformers' models take
int64 ``input_ids``); standard-normal values cast to int64 were ids -3..3 only, negative ones
among them, no sample of the model's inputs. An integer input no such Gather reads is refused.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from passes.one_line import OneLineArgumentParser, one_line, positive_int, printable, printable_message, seed_int
from passes.files import DestinationError, check_destination, check_not_read, input_file_problem
from passes.graph_io import model_and_data_files
from passes.verify import MAX_RANDOM_FEED_ELEMENTS


def digits_set(count: int, batch: int = 1) -> dict[str, np.ndarray]:
    """``count`` samples of ``batch`` training images each: {"input": [count, batch, 3, 64, 64]}."""
    from vmamba_ref.digits import load_digits_split

    train = load_digits_split().x_train
    if count <= 0 or batch <= 0 or count * batch > len(train):
        raise ValueError(f"--count x --batch must be between 1 and {len(train)} (the training split), "
                         f"got {count} x {batch}")
    return {"input": train[: count * batch].reshape(count, batch, *train.shape[1:]).astype(np.float32)}


def index_bounds(model) -> dict[str, int]:
    """{graph input: rows} for inputs read as the indices of a Gather whose data is an initializer
    (the smallest such table where several are); rows = the table's size along the Gather's axis."""
    tables = {init.name: list(init.dims) for init in model.graph.initializer}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[0] not in tables:
            continue
        dims = tables[node.input[0]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if dims and -len(dims) <= axis < len(dims):
            rows = dims[axis]
            bounds[node.input[1]] = min(rows, bounds.get(node.input[1], rows))
    return bounds


def synthetic_set(model_path: Path, count: int, seed: int) -> dict[str, np.ndarray]:
    from passes.graph_io import read_structure
    from tools.tpu_check import model_interface

    if count <= 0:
        raise ValueError(f"--count must be positive, got {count}")
    # read once: the inputs' shapes and the tables their ids index from one model (adv24: each was read by path, so a
    # file swapped in between gave one model's shapes and another's bounds, or a traceback-free 'cannot read')
    model = read_structure(model_path)
    interface, _, _ = model_interface(model)
    elements = count * sum(math.prod(shape) for _, shape, _ in interface)
    if elements > MAX_RANDOM_FEED_ELEMENTS:   # the compiler's cap on random inputs (passes.verify)
        raise ValueError(f"{count} samples of the model's inputs hold {elements:,} elements, too many to make "
                         f"(> {MAX_RANDOM_FEED_ELEMENTS:,})")
    bounds = index_bounds(model)
    return random_inputs(interface, bounds, np.random.default_rng(seed), (count,), "give a calibration set of your own")


def random_inputs(interface, bounds: dict[str, int], random: np.random.Generator, samples: tuple[int, ...] = (),
                  advice: str = "give inputs of your own") -> dict[str, np.ndarray]:
    """One array per (name, shape, dtype) of ``interface``, ``samples`` axes first, drawn in order from ``random``:
    standard-normal values, or for an integer input ids uniform over ``bounds[name]`` rows (``index_bounds``). An
    integer input with no bound is refused (``ValueError`` ending in ``advice``). The synthetic calibration set and
    tools.tpu_check's random inputs are both drawn here (adv13: tpu_check cast standard-normal values, ids -3..3)."""
    arrays = {}
    for name, shape, dtype in interface:
        if dtype.kind in "iu":
            if not bounds.get(name, 0) > 0:
                raise ValueError(f"input '{printable(name)}' is of type {dtype} and indexes no constant table (a Gather): "
                                 f"standard-normal values are no sample of it; {advice}")
            arrays[name] = random.integers(0, bounds[name], (*samples, *shape)).astype(dtype)
        else:
            arrays[name] = random.standard_normal((*samples, *shape)).astype(dtype)
    return arrays


def main(argv: Optional[list[str]] = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.tpu_calibration", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    digits = sub.add_parser("digits", help="digits training images (micro-digits)")
    digits.add_argument("--count", type=positive_int, default=64)
    digits.add_argument("--batch", type=positive_int, default=1, help="images per sample: the model's static batch")
    synthetic = sub.add_parser("synthetic", help="fixed standard-normal inputs shaped like the model's (an integer "
                                                 "input: ids over the rows of the table it indexes)")
    synthetic.add_argument("model", help="ONNX model with static input shapes")
    synthetic.add_argument("--count", type=positive_int, default=8)
    synthetic.add_argument("--seed", type=seed_int, default=0)
    for command in (digits, synthetic):
        command.add_argument("-o", "--output", required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    try:   # before the work: a bad destination costs nothing
        check_destination(args.output)
        check_not_read(args.output, model_and_data_files(args.model) if args.kind == "synthetic" else [])
    except DestinationError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    try:
        if args.kind == "digits":
            arrays = digits_set(args.count, args.batch)
        else:
            problem = input_file_problem(args.model, "model")
            if problem:
                raise ValueError(problem)
            arrays = synthetic_set(Path(args.model), args.count, args.seed)
    except Exception as error:  # one line for the user
        sys.stderr.write(f"error: {one_line(error, 300)}\n")
        return 2
    from tools.tpu_toolchain import save_npz

    target = Path(args.output)
    save_npz(target, arrays)   # exclusive: never through a planted link; any input name
    shapes = ", ".join(f"{name} {list(a.shape)}" for name, a in arrays.items())
    print(printable_message(f"wrote {target}: {shapes}"))   # the path and the model's input names: text, not controls
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))
