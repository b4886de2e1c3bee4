"""The relative L2 error, ||actual - expected|| / ||expected||: the one definition every number of the project uses.

numpy only (no torch, no ONNX), so that verification (``passes/verify.py``), the tools (benchmarks, the TPU
check and accuracy), ``vmamba_ref`` and the tests all import this one function; the compiler's rooms may
import it too (it is a helper in ``passes/``, not a pass).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np


def relative_l2(actual, expected) -> float:
    """||actual - expected||_2 / ||expected||_2 over every element, computed in float64.

    - **dtype**: both sides are converted to float64 before subtracting (float16, bfloat16 from ml_dtypes,
      float32, integers and booleans alike), so a low-precision input's error is measured exactly and the
      subtraction never rounds in the input's precision (an integer array against an integer or float one
      past 2^53 is subtracted exactly first: ``difference``). Complex, string and object arrays raise ValueError
      (a conversion would drop the imaginary part or fail half way).
    - **shapes** must be equal: no broadcasting (a (1, 10) against a (10,) would silently compare something
      else); a mismatch raises ValueError naming both shapes. Flatten first where a layout differs on purpose.
    - **zero reference**: where ||expected|| == 0 the result is ||actual - expected|| itself (the absolute
      error): 0/0 is 0.0 (both all zero, or both empty), x/0 is ||actual||, finite and still held to the
      caller's tolerance. There is no floor on ||expected||: a reference of subnormal values (norm ~1e-40)
      is divided by its own norm, not by 1e-30.
    - **non-finite values**: NaN or infinity in either side gives NaN or infinity, never a finite number
      (``passes/verify.py`` fails such an output by that).
    """
    a = _as_float64(actual, "actual")
    b = _as_float64(expected, "expected")
    if a.shape != b.shape:
        raise ValueError(f"relative_l2: actual has shape {list(a.shape)}, expected {list(b.shape)}: "
                         f"they must be equal (no broadcasting)")
    difference_norm = float(np.linalg.norm(difference(actual, expected).reshape(-1)))
    reference_norm = float(np.linalg.norm(b.reshape(-1)))
    return difference_norm / reference_norm if reference_norm > 0 else difference_norm


# float64 holds every integer up to 2^53 exactly, not beyond
EXACT_FLOAT64_INTEGERS = 2**53


def difference(actual, expected) -> np.ndarray:
    """actual - expected in float64 (shapes as relative_l2 takes them). Where one side is of an integer (or boolean)
    type, the other of an integer or float type, and a value passes 2^53, the two are subtracted exactly first: in
    float64 int64 2^53 + 1 and 2^53 were one number, so a reference wrong by one there verified at tolerance 0 with
    'max abs 0' (adv19), also where the reference npz held the integers as floats (adv20)."""
    a, b = np.asarray(actual), np.asarray(expected)
    if _needs_exact_subtraction(a, b):
        exact = [np.array([_exact_number(value) for value in _python_numbers(side)], dtype=object)
                 for side in (a, b)]
        return (exact[0] - exact[1]).astype(np.float64).reshape(a.shape)
    return _as_float64(actual, "actual") - _as_float64(expected, "expected")


def _needs_exact_subtraction(a: np.ndarray, b: np.ndarray) -> bool:
    """One side integer, the other integer or float, equal shapes, all finite, some value at or past 2^53."""
    kinds = {"f" if _is_ml_float(side.dtype) else side.dtype.kind for side in (a, b)}
    if not (kinds & set("biu") and kinds <= set("biuf")) or a.shape != b.shape or not a.size:
        return False
    magnitudes = [np.abs(side.astype(np.float64)) for side in (a, b)]
    return all(np.all(np.isfinite(m)) for m in magnitudes) and \
        max(float(np.max(m)) for m in magnitudes) >= EXACT_FLOAT64_INTEGERS


def _python_numbers(side: np.ndarray) -> list:
    """The values as Python ints (integer and boolean types) or floats (every float type converts to float64
    exactly, bfloat16 and float16 included)."""
    if side.dtype.kind in "biu":
        return side.reshape(-1).tolist()
    return side.astype(np.float64).reshape(-1).tolist()


def _exact_number(value):
    """A Python int or float as an exact number: a float that is an integer (every float past 2^52 is) as that
    int, else as a Fraction, so that int - float never rounds through float64 (Python's own int - float does)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else Fraction(value)
    return int(value)


def _as_float64(values, side: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biuf" and not _is_ml_float(array.dtype):
        raise ValueError(f"relative_l2: {side} has dtype {array.dtype}: only real numbers and booleans")
    return array.astype(np.float64)


def _is_ml_float(dtype: np.dtype) -> bool:
    """A float type of ml_dtypes (bfloat16, float8_*): numpy kind 'V' that np.finfo knows; it converts exactly."""
    if dtype.kind != "V":
        return False
    try:
        np.finfo(dtype)
    except (TypeError, ValueError):
        return False
    return True
