"""The child side of passes.ort_worker: runs models on ONNX Runtime under a memory cap.

Started as ``python -I passes/ort_child.py LIMIT_BYTES``; imports only numpy and onnxruntime (not
the package: ``-I`` puts neither the working folder nor PYTHONPATH on its path). It caps its own
address space first, then answers requests on stdin until stdin ends; each request and answer is
a few frames (8-byte little-endian length, then the bytes):

    request:  JSON {"path": str | null, "names": [input names], "optimize": bool}, the model's bytes (empty with a
              path), an npz of the feeds as arr_0, arr_1, ... in the order of "names"
    answer:   JSON {"ok": true, "names": [output names]} then an npz of the outputs, or
              JSON {"ok": false, "error": "ONNX Runtime's message"}

Names travel in JSON, never as npz member names: a model's names are hostile text.
"""
import io
import json
import os
import signal
import struct
import sys

import numpy as np


def _read_exactly(stream, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream) -> bytes:
    (size,) = struct.unpack("<Q", _read_exactly(stream, 8))
    return _read_exactly(stream, size)


def write_frame(stream, data: bytes) -> None:
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)


def _die_with_parent() -> None:
    """SIGKILL this process when the parent dies (Linux prctl PR_SET_PDEATHSIG): a parent killed
    outright must not leave a child allocating on its own."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


def _as_array(name: str, output):
    """An output as one array: a sequence output (a list) stacked, as verification's comparison read it
    (np.asarray) when ONNX Runtime ran in the compiler's process; one of tensors that do not stack is refused."""
    try:
        return output if isinstance(output, np.ndarray) else np.asarray(output)
    except ValueError:
        raise ValueError(f"output {name!r} is a sequence of tensors of different shapes, which verification "
                         "cannot compare") from None


def cap_address_space(limit: int) -> None:
    """This process's address space capped at `limit` bytes (also tools.ort_profile's child's)."""
    import resource   # Unix only: imported here, so that the parent can import this module's framing anywhere
    _, hard = resource.getrlimit(resource.RLIMIT_AS)   # a cap set on the parent holds here too: never raised
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):   # a system that takes no such cap (macOS): uncapped, as before, not broken
        pass


def main() -> int:
    limit = int(sys.argv[1])
    # Ctrl-C reaches the whole process group: the parent decides, and kills this child if it must.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    cap_address_space(limit)
    import onnxruntime as ort

    # The answers go to a copy of stdout; fd 1 itself to /dev/null, so that whatever a native library
    # prints there (ONNX Runtime's kernels, a custom op's library) never lands in the middle of a frame.
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdout = open(os.devnull, "w")
    while True:
        try:
            header = json.loads(read_frame(stdin))
            model = read_frame(stdin)
            stored = np.load(io.BytesIO(read_frame(stdin)), allow_pickle=False)
            feeds = {name: stored[f"arr_{index}"] for index, name in enumerate(header["names"])}
        except EOFError:
            return 0
        packed = None
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 4   # ORT's own log holds node names raw; its exception says the same
            if not header.get("optimize", True):
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(header["path"] or model, options, providers=["CPUExecutionProvider"])
            del model
            input_names = [value.name for value in session.get_inputs()]
            output_names = [value.name for value in session.get_outputs()]
            missing = [name for name in input_names if name not in feeds]
            if missing:
                answer = {"ok": False, "missing": missing}
            else:
                outputs = session.run(output_names, {name: feeds[name] for name in input_names})
                del session
                buffer = io.BytesIO()   # packed before any frame is written: a failure here is an answer too
                np.savez(buffer, *[_as_array(name, output) for name, output in zip(output_names, outputs)],
                         allow_pickle=False)
                outputs = None
                packed, answer = buffer.getvalue(), {"ok": True, "names": output_names}
        except BaseException as error:   # MemoryError, ORT's failures: said to the parent, the child goes on
            answer, packed = {"ok": False, "error": str(error) or type(error).__name__}, None
        write_frame(stdout, json.dumps(answer).encode())
        if packed is not None:
            write_frame(stdout, packed)
            packed = None
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
