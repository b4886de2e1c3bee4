"""The embedded digits weights: shipped, small, and reproduce the recorded held-out accuracy."""
import json

import numpy as np
import pytest
import torch

from passes.relative_error import relative_l2
from vmamba_ref import DIGITS_META, DIGITS_WEIGHTS, default_model
from vmamba_ref.digits import load_digits_split

pytestmark = pytest.mark.skipif(not DIGITS_WEIGHTS.exists(), reason="run `python -m tools.train_digits` first")


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


def test_split_is_fixed(split):
    assert split.x_train.shape == (1297, 3, 64, 64) and split.x_test.shape == (500, 3, 64, 64)
    assert np.bincount(split.y_test).min() >= 48 and np.bincount(split.y_test).max() <= 52   # stratified
    assert abs(float(split.x_train.mean())) < 0.1


def test_weights_are_small_and_meta_complete():
    assert DIGITS_WEIGHTS.stat().st_size < 4_000_000
    meta = json.loads(DIGITS_META.read_text())
    for key in ("held_out_accuracy", "split", "seed", "epochs"):
        assert key in meta
    assert meta["held_out_accuracy"] >= 0.95


def test_recorded_accuracy_is_reproduced(split):
    from tools.eval_digits import torch_predict

    meta = json.loads(DIGITS_META.read_text())
    logits = torch_predict(split.x_test, scan="sequential")
    correct = int((logits.argmax(1) == split.y_test).sum())
    assert correct == meta["held_out_correct"]
    assert correct / len(split.y_test) == pytest.approx(meta["held_out_accuracy"], abs=1e-12)


def test_chunked_scan_agrees(split):
    x = torch.from_numpy(split.x_test[:20])
    with torch.no_grad():
        a = default_model("sequential")(x)
        b = default_model("chunked")(x)
    assert relative_l2(b, a) <= 1e-5
