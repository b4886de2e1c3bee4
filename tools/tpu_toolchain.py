"""Sophgo tpu-mlir as a tool we run: its venv, its environment, its logs and its profile.

tpu-mlir 1.30.2 lives in its own Python 3.10 venv (default ``.tpu-venv/`` in the repository,
ignored by git), installed once by ``tools/tpu_setup.sh`` (``make tpu-setup``). Its tools call
each other through PATH, import a torch shim from ``<venv>/shim``, and write everything into
their working directory. Everything here is plain functions; printing is left to the CLI.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from passes.files import atomic_target

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO_ROOT / "tools" / "tpu_setup.sh"
DEFAULT_VENV = REPO_ROOT / ".tpu-venv"


# NPU lanes per chip (the channel axis is spread over them); measured with
# tools.tpu_cumsum_ceiling (docs/TPU.md, "More chips").
NPU_LANES = {"bm1684x": 64, "bm1688": 32, "cv186x": 32}


class ToolchainError(Exception):
    """tpu-mlir could not be installed or started; the message says why, in one line."""


# The chips tpu-mlir 1.30.2 compiles for (tools.tpu_check --chip; tools.tpu_accuracy checks its --chip against the
# same list before its minutes of export and compile).
CHIPS = ("bm1684x", "bm1688", "cv183x", "bm1684", "bm1690", "cv186x")


def venv_dir(explicit: Optional[str | os.PathLike] = None) -> Path:
    return Path(explicit or os.environ.get("TPU_VENV") or DEFAULT_VENV).resolve()


def is_installed(venv: Path) -> bool:
    return (venv / ".tpu-ready").is_file() and (venv / "bin" / "model_transform").exists()


def setup_command(venv: Path) -> list[str]:
    return ["bash", str(SETUP_SCRIPT), str(venv)]


def tool_environment(venv: Path) -> dict[str, str]:
    """The environment the tools expect: the venv 'activated', the torch shim importable."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(venv / "shim")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class StepResult:
    name: str
    command: list[str]
    returncode: int
    seconds: float
    log: Path
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run_logged(name: str, command: Sequence[str], cwd: Path, env: dict[str, str], log: Path,
               timeout: Optional[float] = None, tick: Optional[Callable[[str], None]] = None) -> StepResult:
    """Run ``command`` with stdout+stderr into ``log``; call ``tick(last_line)`` about 4x a second.

    The log is written to an exclusive temporary beside it, renamed over ``log`` when the tool has
    ended (also when it failed or timed out: its log says why): a link planted at ``log`` is replaced,
    never written through, and an interrupt leaves no half log."""
    started = time.perf_counter()
    with atomic_target(log, ".log", "log") as temporary, open(temporary, "wb") as sink:
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        try:
            while True:
                try:
                    process.wait(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    if tick is not None:
                        tick(last_line(temporary))
                    if timeout is not None and time.perf_counter() - started > timeout:
                        timed_out = True
                        stop_group(process)
                        break
        except BaseException:
            # Ctrl-C or SIGTERM: the tool has a session of its own (no terminal signal reaches it)
            # and would go on compiling for minutes with no parent.
            stop_group(process)
            raise
    return StepResult(name, list(command), process.returncode if not timed_out else -9,
                      time.perf_counter() - started, log, timed_out)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``arrays`` as an npz (one ``NAME.npy`` member each, as np.savez writes them, read back by np.load
    under NAME) through an exclusive temporary renamed over ``path`` (never through a link planted
    there, never half a file). The names are a model's (its inputs and outputs): np.savez(path, **arrays)
    took one named 'file' for its own argument (TypeError) and one named 'allow_pickle' for its flag
    (the array left out), so the members are written here, whatever their names."""
    import zipfile

    with atomic_target(path, ".npz") as temporary, \
            zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def stop_group(process: subprocess.Popen) -> None:
    """Stop the tool and the tools it started (its own process group, nothing else)."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def last_line(log: Path, limit: int = 4096) -> str:
    """The last non-empty line of a log (progress bars' carriage returns handled)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [_ANSI.sub("", part).strip() for part in re.split(r"[\r\n]+", tail)]
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


# --- reading the compiler's logs ----------------------------------------------------------

# In priority order: the first pattern that matches anywhere in the log gives the reason.
_REASON_PATTERNS = [
    # firmware kernel asserts: "ERROR: ASSERT .../nodechip_cumsum.c: nodechip_cumsum: 147: false"
    # followed by "ASSERT info: cumsum input tensor is too large, need to slice"; the MLIR side's
    # asserts: "ASSERT executed at/.../MatMul.cpp:66" then "ASSERT INFO:a_s[i] == b_s[i] || ..."
    (re.compile(r"ASSERT info: *(?P<info>.+)", re.IGNORECASE), "info"),
    (re.compile(r"ERROR: ASSERT (?P<where>.+)"), "where"),
    # C++ asserts: "CumSum.cpp:40: ...: Assertion `num_dims <= 4' failed."
    (re.compile(r"(?P<all>[\w./-]+\.(?:cpp|cc|h|hpp|c):\d+:.*Assertion .+ failed\.?)"), "all"),
    (re.compile(r"(?P<all>LLVM ERROR: .+)"), "all"),
    # MLIR diagnostics: "<unknown>:0: error: loc("name"): 'top.Einsum' op attribute 'mode' failed ..."
    (re.compile(r":\d+: error: (?P<all>.+)"), "all"),
    (re.compile(r"(?P<all>(?:Segmentation fault|Aborted|core dumped).*)"), "all"),
]
_PYTHON_ERROR = re.compile(r"^(?P<all>(?:[A-Za-z_][\w.]*)?(?:Error|Exception): .+)$")
_FIRMWARE_WHERE = re.compile(r"(?:ERROR: ASSERT |ASSERT executed at *)(?P<where>\S.*)")


def failure_reason(log_text: str) -> str:
    """The compiler's own reason for a failure, one line, taken from its log."""
    text = _ANSI.sub("", log_text)
    for pattern, group in _REASON_PATTERNS:
        match = pattern.search(text)
        if match:
            reason = match.group(group).strip()
            if group == "info":
                where = _FIRMWARE_WHERE.search(text)
                if where:
                    location = where.group("where").strip()
                    reason = f"{reason} ({Path(location.split(':')[0]).name}:{':'.join(location.split(':')[1:]).strip()})"
            return _shorten(reason)
    python_errors = [m.group("all") for line in text.splitlines() if (m := _PYTHON_ERROR.match(line.strip()))]
    if python_errors:
        return _shorten(python_errors[-1])
    if "npz compare FAILED" in text or "Failed" in text and "compare" in text:
        line = next((l for l in reversed(text.splitlines()) if "FAILED" in l or "Failed" in l), "")
        return _shorten(f"result comparison failed: {line.strip()}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _shorten(lines[-1]) if lines else "no output"


def comparison_failed(log_text: str) -> bool:
    """tpu-mlir's own npz comparison (ONNX vs MLIR, MLIR vs cmodel) reported a failure."""
    return "npz compare FAILED" in log_text


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the deploy-time profile estimate -----------------------------------------------------

_RUNTIME = re.compile(r"flops:\s*(?P<flops>\d+),\s*runtime:\s*(?P<ms>[\d.]+)\s*ms")
_CYCLES = re.compile(r"TCYC\s*:\s*(?P<cycles>\d+)")


_PROFILE_COMMAND = re.compile(r"(?P<layer>[A-Za-z][A-Za-z0-9]*)_\d+\|[A-Z_]+\|s:(?P<start>\d+)\|.*?\|e:(?P<end>\d+)\|")


@dataclass
class ProfileEstimate:
    milliseconds: float
    cycles: Optional[int]
    flops: Optional[int]
    files: list[str]
    # Share of the estimated time per tpu-mlir layer type (Conv2D, MatMul, Permute, Load, ...).
    shares: dict[str, float] = field(default_factory=dict)


def layer_type_shares(text: str) -> dict[str, float]:
    """Where the estimated time goes, by layer type, from the profile's command timeline.

    Each layer's span (its first command's start to its last command's end, compute and DMA
    together) counts for its type; spans are normalised to shares of their sum because the
    compute and DMA engines overlap."""
    spans: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    for line in text.splitlines():
        for match in _PROFILE_COMMAND.finditer(line):
            name = match.group(0).split("|", 1)[0]
            start, end = int(match.group("start")), int(match.group("end"))
            span = spans.setdefault(name, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
            kinds[name] = match.group("layer")
    totals: dict[str, int] = {}
    for name, (start, end) in spans.items():
        totals[kinds[name]] = totals.get(kinds[name], 0) + max(end - start, 0)
    whole = sum(totals.values())
    if not whole:
        return {}
    return {kind: cycles / whole for kind, cycles in sorted(totals.items(), key=lambda kv: -kv[1])}


def read_profile(workdir: Path) -> Optional[ProfileEstimate]:
    """Sum tpu-mlir's run-time estimate over ``compiler_profile_*.txt`` (one per subnet/core)."""
    files = sorted(workdir.glob("compiler_profile_*.txt"))
    total_ms, cycles, flops, used, timeline = 0.0, 0, 0, [], []
    for path in files:
        text = path.read_text(errors="replace")
        timeline.append(text)
        match = _RUNTIME.search(text)
        if not match:
            continue
        total_ms += float(match.group("ms"))
        flops += int(match.group("flops"))
        cycle_match = _CYCLES.search(text)
        cycles += int(cycle_match.group("cycles")) if cycle_match else 0
        used.append(path.name)
    if not used:
        return None
    return ProfileEstimate(total_ms, cycles or None, flops or None, used, layer_type_shares("\n".join(timeline)))


# --- running a bmodel over many inputs ----------------------------------------------------

BMODEL_RUN_SCRIPT = REPO_ROOT / "tools" / "tpu_bmodel_run.py"


def bmodel_run_command(venv: Path, bmodel: Path, inputs: Path, outputs: Path) -> list[str]:
    """tools/tpu_bmodel_run.py in the tpu-mlir venv: ``import tpu_mlir`` sets the runtime's
    library paths, then starts the script as its own tools are started."""
    launcher = f"import tpu_mlir; tpu_mlir.run_subprocess_py({str(BMODEL_RUN_SCRIPT)!r})"
    return [str(venv / "bin" / "python"), "-c", launcher, str(bmodel), str(inputs), str(outputs)]
