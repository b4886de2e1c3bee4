"""passes.relative_error.relative_l2: hand-computed values, the zero reference, low-precision inputs, bad shapes."""
import re

import numpy as np
import pytest

from passes.relative_error import relative_l2


def test_hand_computed_values():
    # ||(3, 4)|| = 5 against ||(6, 8)|| = 10
    assert relative_l2([3.0, 4.0], [0.0, 0.0]) == 5.0      # zero reference: the absolute error
    assert relative_l2([9.0, 12.0], [6.0, 8.0]) == 0.5
    assert relative_l2(np.array([[1.0, 2.0], [2.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(
        np.sqrt(8.0), abs=0, rel=1e-15)
    assert relative_l2([1, 2, 3], [1, 2, 3]) == 0.0         # integers, identical
    assert relative_l2(np.array([True, False]), np.array([True, True])) == 1 / np.sqrt(2)
    assert isinstance(relative_l2([1.0], [2.0]), float)


def test_zero_reference_is_the_absolute_error():
    assert relative_l2(np.zeros((2, 3)), np.zeros((2, 3))) == 0.0                     # 0/0
    assert relative_l2(np.full((2, 2), 0.5), np.zeros((2, 2))) == 1.0                 # x/0: ||x||
    assert relative_l2(np.zeros(0), np.zeros(0)) == 0.0                               # empty
    # no floor on the reference's norm: subnormal references are divided by their own norm
    tiny = np.array([1e-40, 0.0])
    assert relative_l2(2 * tiny, tiny) == 1.0


def test_non_finite_values_give_a_non_finite_result():
    assert np.isnan(relative_l2([np.nan, 1.0], [1.0, 1.0]))
    assert relative_l2([np.inf, 1.0], [1.0, 1.0]) == np.inf
    assert np.isnan(relative_l2([1.0, 1.0], [np.inf, 1.0]))


def test_low_precision_inputs_are_upcast_before_subtracting():
    # 2049 is not a float16 (it rounds to 2048): computed in float16, 2048 - 2048 would be 0 error
    actual = np.array([2048.0, 1.0], dtype=np.float16)
    expected = np.array([2049.0, 0.0], dtype=np.float64)
    assert relative_l2(actual, expected) == np.sqrt(2.0) / 2049.0
    # float16 against float16: ||(300, 0)||**2 = 90000 overflows float16 (max 65504), so a norm taken in
    # float16 is inf and the ratio 0; in float64 it is 100 / 300
    assert relative_l2(np.array([400.0, 0.0], np.float16), np.array([300.0, 0.0], np.float16)) == 1 / 3
    ml_dtypes = pytest.importorskip("ml_dtypes")
    # bfloat16 (numpy kind 'V'): 1 + 2**-7 is the next bfloat16 after 1
    bf16 = np.array([1 + 2 ** -7, 2.0], dtype=ml_dtypes.bfloat16)
    assert bf16.dtype.kind == "V"
    assert relative_l2(bf16, np.array([1.0, 2.0], dtype=ml_dtypes.bfloat16)) == 2 ** -7 / np.sqrt(5.0)


def test_mismatched_shapes_are_refused_without_broadcasting():
    with pytest.raises(ValueError, match=re.escape(
            "relative_l2: actual has shape [1, 10], expected [10]: they must be equal (no broadcasting)")):
        relative_l2(np.zeros((1, 10)), np.ones(10))
    with pytest.raises(ValueError, match=re.escape("actual has shape [3], expected [2]")):
        relative_l2([1.0, 2.0, 3.0], [1.0, 2.0])


def test_non_real_dtypes_are_refused():
    with pytest.raises(ValueError, match=re.escape("relative_l2: actual has dtype complex128: only real numbers")):
        relative_l2(np.array([1 + 1j]), np.array([1.0]))
    with pytest.raises(ValueError, match=re.escape("relative_l2: expected has dtype <U1: only real numbers")):
        relative_l2(np.array([1.0]), np.array(["a"]))


def test_a_structured_array_is_refused_though_numpy_converts_it():
    """numpy kind 'V' is ml_dtypes' floats and also structured arrays, which astype(float64) converts without a word
    (a record's first field): only a type np.finfo knows is a float (mutants: finfo(None), which numpy reads as
    float64, and any 'V' taken)."""
    record = np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")])
    with pytest.raises(ValueError, match=re.escape(
            "relative_l2: expected has dtype [('a', '<f4'), ('b', '<i8')]: only real numbers and booleans")):
        relative_l2(np.zeros(2), record)


def test_integers_past_2_to_the_53_are_subtracted_exactly():
    """int64 2^53 + 1 against 2^53 were one float64 number: rel L2 0, and passes.apply said 'verified ... max abs 0,
    rel L2 0 (tolerance 0)' of a reference wrong by one (adv19). Exact now, in every integer pairing."""
    from passes.verify import compare

    actual = np.array([2**53 + 1, 5], np.int64)
    expected = np.array([2**53, 5], np.int64)
    assert relative_l2(actual, expected) == 1 / 2**53
    assert relative_l2(np.array([2**64 - 1], np.uint64), np.array([2**64 - 2], np.uint64)) == 1 / (2**64 - 2)
    assert relative_l2(np.array([-2**63], np.int64), np.array([-2**63 + 1], np.int64)) == 1 / 2**63
    assert relative_l2(actual, actual) == 0.0
    [comparison] = compare({"y": actual}, {"y": expected}, rtol_l2=0.0)
    assert (comparison.ok, comparison.max_abs, comparison.rel_l2) == (False, 1.0, 1 / 2**53)
    assert compare({"y": actual}, {"y": actual.astype(np.uint64)}, rtol_l2=0.0)[0].ok


def test_an_integer_output_against_a_float_reference_is_subtracted_exactly():
    """int64 2^53 + 1 against a float64 reference of 2^53 (an npz that held the integers as floats) was one float64
    number: rel L2 0 at tolerance 0 (adv19's leftover, adv20). A float is an exact number: subtracted as one now,
    whichever side is the float; a fractional float against a small int is float64's subtraction, exact there."""
    from passes.verify import compare

    actual = np.array([2**53 + 1, 5], np.int64)
    as_floats = np.array([2**53, 5], np.float64)
    assert relative_l2(actual, as_floats) == 1 / 2**53
    assert relative_l2(as_floats, actual) == np.sqrt(1.0) / np.linalg.norm(actual.astype(np.float64))
    [comparison] = compare({"y": actual}, {"y": as_floats}, rtol_l2=0.0)
    assert (comparison.ok, comparison.max_abs, comparison.rel_l2) == (False, 1.0, 1 / 2**53)
    assert compare({"y": actual}, {"y": np.array([2**53 + 2, 5], np.float64)}, rtol_l2=0.0)[0].max_abs == 1.0
    assert compare({"y": np.array([2**60], np.int64)}, {"y": np.array([2**60], np.float32)}, rtol_l2=0.0)[0].ok
    assert relative_l2(np.array([3], np.int64), np.array([2.5])) == 0.5 / 2.5
