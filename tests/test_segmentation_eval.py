"""Flip, multi-scale and sliding-window inference: known answers with a pointwise 'model'."""

from __future__ import annotations

import cv2
import numpy as np

from hrnet_jax.evaluation.segmentation import (logits_at_input_size, multi_scale_probabilities,
                                               sliding_window_logits)

MIX = np.random.RandomState(0).randn(3, 4).astype(np.float32)


def pointwise(images: np.ndarray) -> np.ndarray:
    """A 'model' whose logits at a pixel depend on that pixel alone: windows cannot change it."""
    return images @ MIX


def smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([np.sin(x / 7), np.cos(y / 5), np.sin((x + y) / 11)], -1).astype(np.float32)


def test_sliding_windows_reproduce_a_whole_image_prediction():
    image = smooth_image(50, 70)
    whole = pointwise(image[None])[0]
    # 20x30 windows at stride 13x20, last ones flush with the border; overlaps averaged.
    np.testing.assert_allclose(sliding_window_logits(pointwise, image, (20, 30), False), whole,
                               rtol=1e-6, atol=1e-6)


def test_flip_averages_the_mirrored_prediction():
    image = smooth_image(16, 24)
    asymmetric = lambda x: pointwise(x) + np.arange(x.shape[2], dtype=np.float32)[None, None, :, None]
    flipped = logits_at_input_size(asymmetric, image, flip=True)
    # The column ramp averages with its mirror: a constant (width - 1) / 2 over the image.
    np.testing.assert_allclose(flipped, pointwise(image[None])[0] + 11.5, rtol=1e-5, atol=1e-5)


def test_multi_scale_sums_exp_logits_resized_back():
    image = smooth_image(64, 128)
    scales, base, crop = (0.5, 1.0, 1.5), 128, (32, 64)
    total = multi_scale_probabilities(pointwise, image, scales, False, base, crop)
    expected = np.zeros((64, 128, 4), np.float32)
    for scale in scales:
        long_side = int(base * scale + 0.5)
        scaled = cv2.resize(image, (long_side, long_side // 2), interpolation=cv2.INTER_LINEAR)
        logits = pointwise(scaled[None])[0]
        back = np.stack([cv2.resize(np.ascontiguousarray(logits[..., k]), (128, 64),
                                    interpolation=cv2.INTER_LINEAR) for k in range(4)], -1)
        expected += np.exp(back)
    np.testing.assert_allclose(total, expected, rtol=2e-3, atol=2e-3)
