"""sklearn's 8x8 digits as 64x64 RGB images: the fixed split the embedded weights use."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_SEED = 0
HELD_OUT = 500
IMG_SIZE = 64
# Mean/std of the upsampled training images (pixel values / 16); fixed so ONNX users can reproduce.
NORM_MEAN = 0.3
NORM_STD = 0.33


@dataclass(frozen=True)
class DigitsSplit:
    x_train: np.ndarray   # (1297, 3, 64, 64) float32, normalised
    y_train: np.ndarray   # (1297,) int64
    x_test: np.ndarray    # (500, 3, 64, 64) float32, normalised
    y_test: np.ndarray    # (500,) int64


def preprocess(images_8x8: np.ndarray, size: int = IMG_SIZE) -> np.ndarray:
    """(n, 8, 8) values 0..16 -> (n, 3, size, size) float32: bilinear upsample, 3 channels, normalise."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(images_8x8, dtype=np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - NORM_MEAN) / NORM_STD
    return x.expand(-1, 3, -1, -1).contiguous().numpy()


def load_digits_split(size: int = IMG_SIZE) -> DigitsSplit:
    """Stratified 1297/500 split of sklearn's load_digits with random_state 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx_train, idx_test = train_test_split(np.arange(len(digits.target)), test_size=HELD_OUT,
                                           stratify=digits.target, random_state=SPLIT_SEED)
    x = preprocess(digits.images, size)
    y = digits.target.astype(np.int64)
    return DigitsSplit(x[idx_train], y[idx_train], x[idx_test], y[idx_test])
