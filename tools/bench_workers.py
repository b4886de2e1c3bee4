"""ONNX Runtime rows in processes of their own, for timing with ONNX Runtime's default intra-op spinning.

A session whose intra-op threads spin keeps them spinning for a while after each run. With every
row's session in one process, a spinning session slowed the next row by 60-80 ms on the 16-core host
(session s14), so ``tools.bench --ort-spinning`` gives each ONNX Runtime row a worker process: the
worker builds its session, then runs when told and sends back the output and its own time of the
run (the transfer of the input is not timed). The rounds stay interleaved and rotated;
tools.bench waits ``SETTLE_SECONDS`` before each run so that the previous row's threads are idle.
"""
from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path

import numpy as np

from passes.one_line import one_line, printable
from tools.bench_rows import BenchError, OnnxRow, OnnxRunner

# ONNX Runtime 1.30's workers spin ~2^20 pause instructions (tens of ms) before they block.
SETTLE_SECONDS = 0.25
_STOP_SECONDS = 10.0


def _serve(connection, path: str, threads: int, spinning: bool) -> None:
    """The worker: build the session, then answer each input with (output, seconds, start time)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the parent's to handle: it stops the worker
    try:
        runner = OnnxRunner(Path(path), threads, spinning=spinning)
    except Exception as error:  # ONNX Runtime raises its own types (Fail, InvalidGraph, ...)
        connection.send(("error", f"{type(error).__name__}: {one_line(error)}"))
        return
    connection.send(("ready", runner.session_seconds, runner.static_batch))
    while True:
        try:
            x = connection.recv()
        except EOFError:        # the parent is gone: nothing left to answer
            return
        if x is None:
            return
        started = time.monotonic()
        try:
            out = runner.run(x)
        except Exception as error:
            connection.send(("error", f"{type(error).__name__}: {one_line(error)}"))
            continue
        connection.send(("ok", out, time.monotonic() - started, started))


class OnnxWorker(OnnxRow):
    """An ONNX Runtime row whose session lives in a spawned worker process.

    ``run(x)`` returns the output; ``last_seconds`` is the worker's own time of that run and
    ``started`` the worker's ``time.monotonic()`` at the start of each run (the rows' order).
    """

    def __init__(self, path: Path, threads: int, spinning: bool = True):
        super().__init__(path, static_batch=None)     # the worker's session tells the batch once it is built
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, str(path), threads, spinning), daemon=True,
                                       name=f"bench-onnx-{self.path.name}")
        self.process.start()
        child.close()
        self.started: list[float] = []
        self.last_seconds: float | None = None
        reply = self._receive()
        if reply[0] == "error":
            self.close()
            raise BenchError(f"{printable(self.path)}: ONNX Runtime could not load it: {reply[1]}")
        _, self.session_seconds, self.static_batch = reply

    def _receive(self, send=None):
        """The worker's reply (to ``send`` when given); a worker that is gone is a one-line error."""
        try:
            if send is not None:
                self.connection.send(send)
            return self.connection.recv()
        except (EOFError, OSError):     # closed or broken pipe
            self.close()
            raise BenchError(f"the ONNX Runtime worker for {printable(self.path)} died "
                             f"(exit code {self.process.exitcode})") from None

    def run(self, x: np.ndarray) -> np.ndarray:
        reply = self._receive(send=x)
        if reply[0] == "error":
            raise BenchError(f"{printable(self.path)}: ONNX Runtime failed: {reply[1]}")
        _, out, self.last_seconds, started = reply
        self.started.append(started)
        return out

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.connection.send(None)
            except OSError:     # the pipe is already broken: the worker is on its way out
                pass
            self.process.join(_STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(_STOP_SECONDS)
        self.connection.close()
