"""Ceilings of the rewrites left for the `cpu` graph: the graph made deliberately wrong, one kind of copy at a time.

    python -m tools.bench_ceilings cpu.onnx --out DIR                  # write the variants (weights left out)
    python -m tools.bench_ceilings --time DIR [--rounds 41] [--threads 2]   # time them, interleaved

A rewrite that removes a kind of data movement can at best make the graph as fast as the same graph with that
movement free. Each variant frees one more kind, cumulatively, by replacing nodes with ones that move nothing of
consequence (wrong numbers, the same shapes):
    v0  the graph as compiled
    v1  the cross-scan's and -merge's flips (Slices with step -1) as forward Slices: what backward scans reach
    v2  and the H/W swaps (Transpose (0, 1, 3, 2) of square planes, MatMuls by a permutation matrix) as Identity:
        what scans along columns without a column-major copy reach
    v3  and the SS2D region's layout Transposes (to channels-first for the depthwise Conv, back to channels-last
        from a Reshape for out_norm) as Reshapes: what a channels-last SS2D region reaches
    v4  and every Log as Identity: the softplus's Log free, which no exact rewrite makes it (docs/BENCHMARKS.md)
Weights over 4,096 values are left out of the files (a spec of shape, mean and std beside them; `--time` fills them
with seeded normal values of those), so the folder carries to another machine in a few MB. Timing only: the numbers
the variants compute are wrong by design. `--time` needs onnxruntime and numpy alone (a device image's).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

LARGE_WEIGHT = 4096
SPEC = "weights.json"
VARIANTS = ("v0-as-compiled", "v1-no-flips", "v2-no-flips-swaps", "v3-no-flips-swaps-layout",
            "v4-no-flips-swaps-layout-log")


def _constants(model) -> dict:
    from onnx import numpy_helper

    found = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _shapes(model) -> dict:
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {info.name: [dim.dim_value for dim in info.type.tensor_type.shape.dim] for info in infos}


def _replace(model, index: int, op: str, inputs: list, suffix: str, extra: dict | None = None) -> None:
    from onnx import helper, numpy_helper

    node = model.graph.node[index]
    for name, values in (extra or {}).items():
        model.graph.initializer.append(numpy_helper.from_array(values, name))
    model.graph.node[index].CopyFrom(helper.make_node(op, inputs, list(node.output), name=f"{node.name}/{suffix}"))


def free_flips(model) -> int:
    """Each Slice with a step -1 as the forward Slice of the same extent."""
    constants, shapes, freed = _constants(model), _shapes(model), 0
    for index, node in enumerate(model.graph.node):
        steps = constants.get(node.input[4]) if node.op_type == "Slice" and len(node.input) > 4 else None
        if steps is None or not (steps < 0).any():
            continue
        rank, out_shape = len(shapes[node.input[0]]), shapes[node.output[0]]
        axes = constants[node.input[3]]
        starts = [int(start) if step > 0 else 0 for start, step in zip(constants[node.input[1]], steps)]
        ends = [int(end) if step > 0 else out_shape[axis % rank]
                for end, step, axis in zip(constants[node.input[2]], steps, axes)]
        if set(steps.tolist()) - {1, -1}:
            raise ValueError(f"Slice '{node.name}': steps {steps.tolist()}, only 1 and -1 are freed")
        tag = f"bench_ceilings/flip_{freed}"
        _replace(model, index, "Slice", [node.input[0], tag + "/starts", tag + "/ends", tag + "/axes"], "forward",
                 {tag + "/starts": np.array(starts, np.int64), tag + "/ends": np.array(ends, np.int64),
                  tag + "/axes": np.array(axes, np.int64)})
        freed += 1
    return freed


def _is_permutation(matrix) -> bool:
    return (matrix is not None and matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1] > 1
            and set(np.unique(matrix).tolist()) <= {0.0, 1.0} and (matrix.sum(0) == 1).all()
            and (matrix.sum(1) == 1).all() and not (matrix == np.eye(len(matrix))).all())


def free_swaps(model) -> int:
    """H/W swaps of square planes as Identity: Transpose (.., 3, 2) keeping the shape, MatMul by a permutation."""
    constants, shapes, freed = _constants(model), _shapes(model), 0
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Transpose":
            perm = list(node.attribute[0].ints) if node.attribute else []
            if perm == [0, 1, 3, 2] and shapes.get(node.input[0]) == shapes.get(node.output[0]):
                _replace(model, index, "Identity", [node.input[0]], "free")
                freed += 1
        elif node.op_type == "MatMul":
            for side in (0, 1):
                if _is_permutation(constants.get(node.input[side])):
                    _replace(model, index, "Identity", [node.input[1 - side]], "free")
                    freed += 1
                    break
    return freed


def free_layout(model) -> int:
    """The SS2D region's layout Transposes as Reshapes: (0, 3, 1, 2) read by a depthwise Conv only, and (0, 2, 3, 1)
    of a Reshape's output (the cross-merge's) read by LayerNormalization only. The residual stream's Transposes are
    left: ONNX Runtime cancels those in pairs itself."""
    shapes, freed = _shapes(model), 0
    producers = {output: node for node in model.graph.node for output in node.output}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Transpose" or not node.attribute:
            continue
        perm, read_by = list(node.attribute[0].ints), readers.get(node.output[0], [])
        if len(read_by) != 1:
            continue
        reader, producer = read_by[0], producers.get(node.input[0])
        channels = shapes.get(node.output[0], [0, 0])[1]
        groups = next((attribute.i for attribute in reader.attribute if attribute.name == "group"), 1)
        depthwise = perm == [0, 3, 1, 2] and reader.op_type == "Conv" and groups == channels > 1
        to_out_norm = (perm == [0, 2, 3, 1] and reader.op_type == "LayerNormalization" and producer is not None
                       and producer.op_type == "Reshape")
        if depthwise or to_out_norm:
            tag = f"bench_ceilings/layout_{freed}"
            _replace(model, index, "Reshape", [node.input[0], tag], "free",
                     {tag: np.array(shapes[node.output[0]], np.int64)})
            freed += 1
    return freed


def free_logs(model) -> int:
    freed = 0
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Log":
            _replace(model, index, "Identity", [node.input[0]], "free")
            freed += 1
    return freed


def _without_large_weights(model) -> tuple:
    """A copy with unused initializers dropped and those over LARGE_WEIGHT float32 values made graph inputs, and the
    spec (shape, mean, std) to fill them with."""
    import onnx
    from onnx import helper, numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    used = {name for node in copy.graph.node for name in node.input} | {out.name for out in copy.graph.output}
    kept, spec = [], {}
    for init in copy.graph.initializer:
        if init.name not in used:
            continue
        values = numpy_helper.to_array(init)
        if values.size > LARGE_WEIGHT and values.dtype == np.float32:
            spec[init.name] = [list(values.shape), float(values.mean()), float(values.std())]
            copy.graph.input.append(helper.make_tensor_value_info(init.name, onnx.TensorProto.FLOAT, list(values.shape)))
        else:
            kept.append(init)
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    return copy, spec


def write_variants(model, folder: Path) -> dict:
    """The five variants and the weights' spec into `folder` (which must exist), together or not at all (an error or
    Ctrl-C part way leaves the folder as it was, never new variants beside an old spec); returns what each step
    freed."""
    import onnx

    from passes.files import atomic_targets

    freed, spec = {}, {}
    steps = (None, ("flips", free_flips), ("swaps", free_swaps), ("layout", free_layout), ("logs", free_logs))
    with atomic_targets(*(folder / f"{name}.onnx" for name in VARIANTS), folder / SPEC) as targets:
        for name, step, target in zip(VARIANTS, steps, targets):
            if step:
                freed[step[0]] = step[1](model)
            stripped, variant_spec = _without_large_weights(model)
            spec.update(variant_spec)
            onnx.save(stripped, target)
        targets[-1].write_text(json.dumps(spec) + "\n")
    return freed


def interleaved(names, rounds: int):
    """Each name once a round, the order rotated by one each round (no variant always runs after the same one)."""
    for round_index in range(rounds):
        shift = round_index % len(names)
        yield from names[shift:] + names[:shift]


def time_variants(folder: Path, rounds: int, threads: int) -> list[tuple[str, float, float]]:
    """(variant, median s, min s) of each variant in `folder`: one session each, spinning off, every variant run once
    a round with the order rotated round by round."""
    import onnxruntime as ort

    from passes.files import read_regular_file

    # read once as bytes, a regular file each (a pipe or /dev/zero put there is refused, not waited on)
    models = {name: read_regular_file(folder / f"{name}.onnx") for name in VARIANTS}
    spec = json.loads(read_regular_file(folder / SPEC))
    weights = {name: np.random.default_rng(index).normal(mean, std, shape).astype(np.float32)
               for index, (name, (shape, mean, std)) in enumerate(sorted(spec.items()))}
    sessions = {}
    for name in VARIANTS:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(models[name], options, providers=["CPUExecutionProvider"])
        feeds = {}
        for spec_input in session.get_inputs():
            if spec_input.name in weights:
                feeds[spec_input.name] = weights[spec_input.name]
            else:
                shape = [size if isinstance(size, int) else 1 for size in spec_input.shape]
                feeds[spec_input.name] = np.random.default_rng(len(feeds)).normal(0, 1, shape).astype(np.float32)
        session.run(None, feeds)   # warm-up
        sessions[name] = (session, feeds)
    times: dict[str, list] = {name: [] for name in VARIANTS}
    for name in interleaved(VARIANTS, rounds):
        session, feeds = sessions[name]
        started = time.perf_counter()
        session.run(None, feeds)
        times[name].append(time.perf_counter() - started)
    return [(name, statistics.median(times[name]), min(times[name])) for name in VARIANTS]


def main(argv=None) -> int:
    from passes.one_line import OneLineArgumentParser, positive_int, printable, thread_count

    parser = OneLineArgumentParser(prog="python -m tools.bench_ceilings", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="a compiled `cpu` graph")
    parser.add_argument("--out", type=Path, help="folder for the variants")
    parser.add_argument("--time", type=Path, metavar="DIR", help="time the variants in DIR instead")
    parser.add_argument("--rounds", type=positive_int, default=41, help="interleaved timed rounds")
    parser.add_argument("--threads", type=thread_count, default=2, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    if args.time is not None:
        if args.model is not None or args.out is not None:
            parser.error("--time takes no model and no --out")
        missing = [name for name in (*(f"{v}.onnx" for v in VARIANTS), SPEC) if not (args.time / name).is_file()]
        if missing:
            parser.error(f"{printable(args.time)} lacks {', '.join(missing)}: write it with --out first")
        import onnxruntime as ort

        try:
            rows = time_variants(args.time, args.rounds, args.threads)
        except Exception as error:   # a file no regular file, a spec no JSON of ours, a model ONNX Runtime refuses
            sys.stderr.write(f"error: {printable(args.time)}: {printable(error, None)}\n")
            return 2
        print(f"# ONNX Runtime {ort.__version__}, {args.threads} threads, spinning off, {args.rounds} interleaved "
              f"rounds; {os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable")
        base = rows[0][1]
        for name, median, fastest in rows:
            print(f"{name:30s} median {median * 1e3:8.1f} ms   min {fastest * 1e3:8.1f} ms   {base / median:.3f}x v0")
        return 0
    if args.model is None or args.out is None:
        parser.error("give a model and --out (or --time DIR)")
    from passes.files import DestinationError, check_folder_destination, check_not_read, folders_made
    from passes.graph_io import InputError, model_and_data_files, read_model

    names = [*(f"{variant}.onnx" for variant in VARIANTS), SPEC]
    try:
        check_folder_destination(args.out, "--out", names)
        read_files = model_and_data_files(args.model)   # (parses the model's structure: once, not per name)
        for name in names:   # never over the model or its data
            check_not_read(args.out / name, read_files, "--out")
        model = read_model(args.model).model
    except (InputError, DestinationError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    try:
        with folders_made(args.out):
            freed = write_variants(model, args.out)
    except (ValueError, KeyError) as error:   # no graph this tool knows (shapes not inferred, odd Slices)
        sys.stderr.write(f"error: {printable(args.model)}: {printable(error, None)}\n")
        return 2
    print(", ".join(f"{count} {kind} freed" for kind, count in freed.items()) + f"; variants in {printable(args.out)}")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))
