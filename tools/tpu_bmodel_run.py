"""Run a bmodel on tpu-mlir's cmodel simulator over many inputs, loading it once.

Runs *inside the tpu-mlir venv* (Python 3.10, numpy and tpu_mlir only; no project imports),
started by tools.tpu_accuracy through ``tpu_toolchain.bmodel_run_command``:

    <venv>/bin/python -c "import tpu_mlir; tpu_mlir.run_subprocess_py(THIS)" MODEL IN.npz OUT.npz

(``import tpu_mlir`` sets the library paths its runtime needs, then starts this file with them.)
IN.npz holds one array per bmodel input, samples stacked first ([S, *input shape]); OUT.npz
gets one array per bmodel output, [S, *output shape], in float32. ``model_runner`` does the
same for one sample but reloads the bmodel and the cmodel each time.
"""
import importlib
import os
import sys
import tempfile
import time
import zipfile

import numpy as np


def save_outputs(path: str, arrays: dict) -> None:
    """``arrays`` as an npz, one ``NAME.npy`` member each (np.load reads it under NAME), through an exclusive
    temporary beside ``path`` renamed over it (never half a file, never through a link planted there). The
    names are the bmodel's outputs: np.savez(path, **arrays) took one named 'file' for its own argument
    (TypeError) and one named 'allow_pickle' for its flag (left out); tools.tpu_toolchain.save_npz does the
    same for the project's side, which this script cannot import."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle, \
                zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def main(model_file: str, inputs_path: str, outputs_path: str) -> int:
    from filelock import FileLock
    from tpu_mlir.python.tools import model_runner as runner
    from tpu_mlir.python.utils.lowering import bf16_to_fp32, lowering

    chip = runner.get_chip_from_model(model_file)
    with FileLock("/tmp/cmodel_so.lock"):  # model_runner's own lock around its library symlinks
        runner.link_cmodel_so(chip, False)
        runner.link_custom_so(chip)
        runner.link_bmlib_so(chip)
        runtime = importlib.import_module("pyruntime_bm")
        runner.bind_cmodel_so(chip, False)
    model = runtime.Model(model_file, 0, "")
    net = model.Net(model.networks[0])
    stored = dict(np.load(inputs_path))
    samples = len(next(iter(stored.values())))
    results = {out.name: [] for out in net.outputs}
    started = time.perf_counter()
    for index in range(samples):
        for tensor in net.inputs:
            value = stored[tensor.name][index] if tensor.name in stored else next(iter(stored.values()))[index]
            tensor.data.reshape(-1)[:] = lowering(value, pdtype=tensor.dtype, pshape=value.shape,
                                                  pzero_point=tensor.qzero_point, pscale=tensor.qscale).flatten()
        net.forward()
        for out in net.outputs:
            data = out.data
            if data.dtype in (np.int8, np.uint8) and out.qscale != 0:
                value = (data.astype(np.float32) - out.qzero_point) * np.float32(out.qscale)
            elif out.dtype == "bf16":
                value = bf16_to_fp32(data)
            else:
                value = np.array(data, dtype=np.float32)
            results[out.name].append(np.array(value, dtype=np.float32))
        print(f"sample {index + 1}/{samples} {time.perf_counter() - started:.1f} s", flush=True)
    save_outputs(outputs_path, {name: np.stack(values) for name, values in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
