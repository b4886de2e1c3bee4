"""What every test that runs Sophgo's tpu-mlir shares: its marks, and the skip when it is not installed."""
import os

import pytest

from tools import tpu_toolchain

TPU_COMPILER_MARKS = [
    pytest.mark.tpu,
    pytest.mark.slow,
    pytest.mark.skipif(not (os.environ.get("TPU_CHECK") == "1" or tpu_toolchain.is_installed(tpu_toolchain.venv_dir())),
                       reason="tpu-mlir not installed (make tpu-setup) and TPU_CHECK != 1"),
]
