"""Verification's ONNX Runtime runs, in a child process with a memory cap.

Why a child: a model's sizes can come from its input values (a ConstantOfShape, Expand, Tile or
Range whose size is computed from the data, a Loop's trip count), which no static check sees
before the run (passes.verify's 2^30-element cap reads inferred shapes only); in the compiler's
own process ONNX Runtime would allocate what such a model asks for, past the machine's memory.
And ONNX Runtime's native work (loading, inlining, a kernel) never returns to Python until it
ends, so Ctrl-C and SIGTERM waited for it. In a child, an address-space cap (RLIMIT_AS) turns an
oversized allocation into ONNX Runtime's own error or the child's death, and the parent, waiting
on a pipe, takes an interrupt at once and kills the child.

One child serves every run of a process (starting one costs ~0.25 s: numpy and onnxruntime), and
is started again after it died or was killed. The child's side: passes/ort_child.py.
"""
from __future__ import annotations

import atexit
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

# The framing is the child's own (it runs isolated, `python -I`, so it cannot import this side).
from passes.one_line import printable
from passes.ort_child import read_frame as _read_frame, write_frame as _write_frame

_CHILD = Path(__file__).with_name("ort_child.py")
# The cap when the machine's memory cannot be read (os.sysconf fails): 16 GiB.
_FALLBACK_LIMIT = 16 << 30
# The share of the machine's physical memory a verification run may take (address space: the
# libraries mapped and the threads' stacks count too, ~1 GiB for ONNX Runtime with its threads).
# Half: the rest stays for the compiler itself (which holds the model too) and the machine's others.
MEMORY_SHARE = 0.5


class WorkerError(Exception):
    """The run failed; the message is ONNX Runtime's (raw: the caller escapes it) or says how the
    child ended."""


def memory_limit() -> int:
    """Bytes of address space the child may take: MEMORY_SHARE of the physical memory."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return _FALLBACK_LIMIT
    return int(physical * MEMORY_SHARE) if physical > 0 else _FALLBACK_LIMIT


class _Worker:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.owner = os.getpid()   # a forked process inherits this object, not the child: it starts its own
        # -I: the child imports numpy and onnxruntime, never a module of the working folder or PYTHONPATH.
        # stderr to /dev/null: a native abort's message ('terminate called ...') would break the one-line rule.
        self.process = subprocess.Popen([sys.executable, "-I", str(_CHILD), str(limit)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def run(self, model: bytes | None, path: str | None, feeds: Mapping[str, np.ndarray],
            timeout: float | None = None, optimize: bool = True) -> dict[str, np.ndarray]:
        names = list(feeds)
        arrays = [np.asarray(feeds[name]) for name in names]
        for name, array in zip(names, arrays):
            if array.dtype.hasobject:   # pickled by np.savez, which the child never unpickles: it died on it, and
                # the run was said to have ended by SIGKILL, 'a native abort or the memory it asked for' (adv23)
                raise WorkerError(f"input '{printable(name)}' is an array of Python objects, not of numbers, booleans or strings")
        buffer = io.BytesIO()
        np.savez(buffer, *arrays, allow_pickle=False)
        # Past the timeout the child is killed; the read below then meets the pipe's end.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self.process.kill()

        # float(): a Fraction or a numpy float32 made the timer's thread fail ('cannot be interpreted as an integer'),
        # a traceback and no limit; past threading.TIMEOUT_MAX (292 years: --verify-timeout 1e10) it overflowed (adv17)
        seconds = None if timeout is None else float(timeout)
        timer = threading.Timer(seconds, expire) if seconds is not None and seconds < threading.TIMEOUT_MAX else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            _write_frame(self.process.stdin, json.dumps({"path": path, "names": names, "optimize": bool(optimize)}).encode())
            _write_frame(self.process.stdin, model or b"")
            _write_frame(self.process.stdin, buffer.getvalue())
            self.process.stdin.flush()
            answer = json.loads(_read_frame(self.process.stdout))
            if not answer["ok"]:
                if "missing" in answer:
                    raise MissingInputs(answer["missing"])
                raise WorkerError(answer["error"])
            stored = np.load(io.BytesIO(_read_frame(self.process.stdout)), allow_pickle=False)
            return {name: stored[f"arr_{index}"] for index, name in enumerate(answer["names"])}
        except (EOFError, BrokenPipeError):
            self.kill()
            if expired.is_set():
                raise TimedOut(f"ONNX Runtime's run did not end within {timeout:g} s; its process was killed") from None
            raise WorkerError(self._how_it_ended()) from None
        finally:
            if timer is not None:
                timer.cancel()

    def _how_it_ended(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return (f"ONNX Runtime's process ended by {name} (a native abort or the memory it asked for: "
                    f"verification lets it take {self.limit / (1 << 30):.1f} GiB of address space)")
        return f"ONNX Runtime's process ended (exit {code})"


class TimedOut(WorkerError):
    """The run passed the caller's timeout; the child was killed."""


class MissingInputs(WorkerError):
    def __init__(self, names: list[str]) -> None:
        super().__init__("missing inputs")
        self.names = names


_worker: _Worker | None = None
_one_at_a_time = threading.Lock()   # one child, one request at a time
_starter: tuple[int, queue.Queue] | None = None   # (the process it serves, its requests)


def _start_from_a_lasting_thread(start: Callable[[], _Worker]) -> _Worker:
    """``start()`` run by one daemon thread that lasts as long as the process. The child asks the kernel for
    SIGKILL when its parent dies (PR_SET_PDEATHSIG), and to the kernel the parent is the *thread* that started
    it: a child started by a compile_model thread that then ended was killed under the next run of another
    thread, whose model was blamed: BadInput 'the input model does not run: ... ONNX Runtime's process ended by
    SIGKILL', exit 2 (adv20, two threads, dev 2-core)."""
    global _starter
    if _starter is None or _starter[0] != os.getpid():   # none yet, or a forked copy whose thread did not follow
        requests: queue.Queue = queue.Queue()
        threading.Thread(target=_serve_starts, args=(requests,), name="onnxruntime-child-starter",
                         daemon=True).start()
        _starter = (os.getpid(), requests)
    answer: dict = {}
    done = threading.Event()
    _starter[1].put((start, answer, done))
    try:
        done.wait()
    except BaseException:   # interrupted while it starts: the child, once started, is of no use
        done.wait()
        if "worker" in answer:
            answer["worker"].kill()
        raise
    if "error" in answer:
        raise answer["error"]
    return answer["worker"]


def _serve_starts(requests: queue.Queue) -> None:
    while True:
        start, answer, done = requests.get()
        try:
            answer["worker"] = start()
        except BaseException as error:   # Popen's OSError: the caller's to raise
            answer["error"] = error
        finally:
            done.set()


def run(model: bytes | None, path: str | None, feeds: Mapping[str, np.ndarray],
        timeout: float | None = None, optimize: bool = True) -> dict[str, np.ndarray]:
    """The model's outputs by name (``model``: its serialized bytes, or ``path`` for ONNX Runtime to
    load); WorkerError (MissingInputs for a feed missing) if ONNX Runtime failed or its process ended,
    TimedOut if it ran past ``timeout`` seconds (loading included; the child killed); ``optimize`` False: ONNX
    Runtime's graph optimisations off. An interrupt
    (Ctrl-C, SIGTERM as passes.interrupts raises it) kills the child at once."""
    global _worker
    with _one_at_a_time:
        limit = memory_limit()
        if _worker is not None and _worker.owner != os.getpid():
            _worker = None
        if _worker is None or not _worker.alive() or _worker.limit != limit:
            if _worker is not None:
                _worker.kill()
            _worker = _start_from_a_lasting_thread(lambda: _Worker(limit))
        try:
            return _worker.run(model, path, feeds, timeout, optimize)
        except WorkerError:
            raise
        except BaseException:   # an interrupt, or a pipe error: the child is mid-request, of no further use
            _worker.kill()
            _worker = None
            raise


class ChildFailed(Exception):
    """``call_capped``'s function raised in the child (its message, one line; ``exit_code`` None) or the
    child ended (``exit_code``)."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def call_capped(function, *args):
    """``function(*args)`` in a child process under the memory cap, for a tool that runs ONNX Runtime
    on a model it was given but not as one run (tools.eval_digits' batches, tools.ort_profile's
    profiled runs, each through one session): the
    model's sizes can come from its input values, past any static check, and ONNX Runtime's native work
    would hold off Ctrl-C and SIGTERM. multiprocessing's spawn, never a fork of a process that ran ONNX
    Runtime's threads; the function and its value travel pickled (the tool's own, never the model's).
    The parent waits on the answer and kills the child on an interrupt. ChildFailed otherwise."""
    import multiprocessing
    import queue as queues

    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    child = context.Process(target=_capped_child, args=(answers, memory_limit(), function, args), daemon=True)
    child.start()
    try:
        while True:
            try:
                kind, value = answers.get(timeout=0.2)
                break
            except queues.Empty:
                if not child.is_alive():
                    raise ChildFailed(f"ONNX Runtime's process ended (exit {child.exitcode}): a native abort, or "
                                      "the memory it asked for", child.exitcode) from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
    if kind != "ok":
        raise ChildFailed(value)
    return value


def _capped_child(answers, limit: int, function, args) -> None:
    from passes.one_line import one_line
    from passes.ort_child import cap_address_space

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides, and kills this child
    cap_address_space(limit)
    try:
        answers.put(("ok", function(*args)))
    except BaseException as error:   # a MemoryError, ONNX Runtime's failures: one line, never a child's traceback
        answers.put(("failed", one_line(error)))


@atexit.register
def _stop() -> None:
    if _worker is not None and _worker.owner == os.getpid():
        _worker.kill()
