#!/usr/bin/env bash
# Install Sophgo's tpu-mlir compiler into its own Python 3.10 venv (default .tpu-venv/).
#
#   bash tools/tpu_setup.sh [VENV_DIR]        (or: make tpu-setup)
#
# Idempotent: a finished install leaves VENV_DIR/.tpu-ready and the script returns at once.
# tpu-mlir 1.30.2 needs Python 3.10 and pins that clash with the project's own environment,
# hence the separate venv. Workarounds for Debian 12 (see docs/TPU.md):
#   * the wheel bundles Ubuntu's glibc (libc.so.6, libm.so.6, libpthread.so.0) in
#     tpu_mlir/lib/third_party/; loaded from there every tool dies with
#     "GLIBC_2.36 not found", so they are moved aside into third_party/bundled-glibc/;
#   * tpu-mlir imports torch only for torch.tensor(x).numpy(): a tiny shim package in
#     VENV_DIR/shim/torch replaces a multi-GB torch (tools/tpu_check.py puts it on PYTHONPATH).
set -euo pipefail

VENV_DIR="${1:-${TPU_VENV:-.tpu-venv}}"
STAMP="$VENV_DIR/.tpu-ready"
PINS="tpu-mlir==1.30.2 onnx==1.14.1 onnxruntime==1.16.3 onnxsim==0.4.17 psutil"

if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$PINS" ]]; then
    exit 0
fi

find_python310() {
    if [[ -n "${TPU_PYTHON:-}" ]]; then echo "$TPU_PYTHON"; return; fi
    local candidate root
    # pyenv's own 3.10 first: a pyenv shim named python3.10 may exist without being usable.
    root="$( (pyenv root 2>/dev/null) || echo "$HOME/.pyenv")"
    for candidate in "$root"/versions/3.10*/bin/python3.10 "$(command -v python3.10 || true)"; do
        if [[ -x "$candidate" ]] && "$candidate" -c 'import sys, venv; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
            echo "$candidate"; return
        fi
    done
    return 1
}

PYTHON310="$(find_python310)" || {
    echo "error: tpu-mlir 1.30.2 needs Python 3.10: none found (set TPU_PYTHON, or 'pyenv install 3.10')" >&2
    exit 2
}
echo "tpu-setup: using $PYTHON310 -> $VENV_DIR" >&2

rm -f "$STAMP"
if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    "$PYTHON310" -m venv "$VENV_DIR"
fi
"$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check $PINS

SITE="$("$VENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
THIRD_PARTY="$SITE/tpu_mlir/lib/third_party"
if [[ ! -d "$THIRD_PARTY" ]]; then
    echo "error: $THIRD_PARTY not found: is this tpu-mlir 1.30.2?" >&2
    exit 2
fi
mkdir -p "$THIRD_PARTY/bundled-glibc"
for lib in libc.so.6 libm.so.6 libpthread.so.0; do
    if [[ -e "$THIRD_PARTY/$lib" ]]; then
        mv -f "$THIRD_PARTY/$lib" "$THIRD_PARTY/bundled-glibc/$lib"
    fi
done

# torch shim: tpu-mlir calls torch.tensor(x).numpy() (and nothing else on the F32/BF16/F16 paths we use);
# onnxruntime_extensions (a tpu-mlir dependency) uses torch only when importing it works.
mkdir -p "$VENV_DIR/shim/torch"
cat > "$VENV_DIR/shim/torch/__init__.py" <<'EOF'
"""Stand-in for torch inside the tpu-mlir venv: tpu-mlir only calls torch.tensor(x).numpy().

Written by tools/tpu_setup.sh. Anything else raises, so a new use shows up clearly.
"""
import numpy as _np

__version__ = "0.0-shim"


class Tensor:
    def __init__(self, data, dtype=None):
        self._array = _np.array(data, dtype=dtype)

    def numpy(self):
        return self._array

    def __array__(self, dtype=None):
        return self._array if dtype is None else self._array.astype(dtype)

    @property
    def shape(self):
        return self._array.shape


def tensor(data, dtype=None):
    return Tensor(data, dtype)


def from_numpy(array):
    return Tensor(array)


class ShimMissing(ImportError):
    """An ImportError, so that optional-torch code (``try: import torch; ... torch.autograd
    ... except ImportError``, as in onnxruntime_extensions) falls back to its no-torch path."""


def __getattr__(name):
    raise ShimMissing(f"torch shim (tools/tpu_setup.sh) has no '{name}'")
EOF

# Smoke test: the compiler's binaries load with the system glibc.
PATH="$VENV_DIR/bin:$PATH" PYTHONPATH="$VENV_DIR/shim" "$VENV_DIR/bin/python" -c 'import tpu_mlir' >/dev/null
if ! PATH="$VENV_DIR/bin:$PATH" PYTHONPATH="$VENV_DIR/shim" "$VENV_DIR/bin/tpuc-opt" --version >/dev/null 2>&1; then
    echo "warning: tpuc-opt --version failed; tools may not run" >&2
fi
echo "$PINS" > "$STAMP"
echo "tpu-setup: ready ($VENV_DIR)" >&2
