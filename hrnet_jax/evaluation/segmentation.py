"""Whole-image segmentation inference as HRNet-Semantic-Segmentation evaluates Cityscapes.

Single scale: the image as it is. Flip: logits averaged with those of the mirrored image.
Multi-scale (0.5 .. 1.75): the long side resized to base_size x scale; scales <= 1 run on the
whole resized image, larger ones by sliding crop-sized windows (stride 2/3 of the crop,
overlaps averaged); each scale's exp(logits) is resized back to the image and summed.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from hrnet_jax.data.transforms import resize_long_side
from hrnet_jax.models.layers import resize_bilinear

# (1, h, w, 3) normalised image -> (1, h', w', classes) logits at any resolution.
Predict = Callable[[np.ndarray], np.ndarray]


def logits_at_input_size(predict: Predict, image: np.ndarray, flip: bool) -> np.ndarray:
    """(h, w, classes) float32 logits of one normalised (h, w, 3) image, upsampled bilinearly
    to its size; with `flip`, averaged with the mirrored image's (mirrored back)."""
    size = image.shape[:2]

    def forward(x):
        out = np.asarray(predict(x[None]), np.float32)
        if out.shape[1:3] != size:
            out = np.asarray(resize_bilinear(jnp.asarray(out), size))
        return out[0]

    logits = forward(image)
    if flip:
        logits = 0.5 * (logits + forward(np.ascontiguousarray(image[:, ::-1]))[:, ::-1])
    return logits


def sliding_window_logits(predict: Predict, image: np.ndarray, crop: Sequence[int],
                          flip: bool) -> np.ndarray:
    """Logits of an image larger than the crop: windows at stride 2/3 of the crop (the last
    one flush with the border), padded where the image is smaller, overlaps averaged."""
    height, width = image.shape[:2]
    crop_h, crop_w = crop
    stride_h, stride_w = int(crop_h * 2 / 3), int(crop_w * 2 / 3)
    rows = max(math.ceil((height - crop_h) / stride_h), 0) + 1
    cols = max(math.ceil((width - crop_w) / stride_w), 0) + 1
    total, count = None, np.zeros((height, width, 1), np.float32)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride_h + crop_h, height), min(c * stride_w + crop_w, width)
            y0, x0 = max(y1 - crop_h, 0), max(x1 - crop_w, 0)
            window = image[y0:y1, x0:x1]
            padded = np.zeros((crop_h, crop_w, 3), np.float32)  # static shape: one compile
            padded[:window.shape[0], :window.shape[1]] = window
            logits = logits_at_input_size(predict, padded, flip)[:y1 - y0, :x1 - x0]
            if total is None:
                total = np.zeros((height, width, logits.shape[-1]), np.float32)
            total[y0:y1, x0:x1] += logits
            count[y0:y1, x0:x1] += 1
    return total / count


def multi_scale_probabilities(predict: Predict, image: np.ndarray, scales: Sequence[float],
                              flip: bool, base_size: int, crop: Sequence[int]) -> np.ndarray:
    """Sum over scales of exp(logits) at the image's size: (h, w, classes)."""
    height, width = image.shape[:2]
    total = None
    for scale in scales:
        scaled, _ = resize_long_side(image, None, int(base_size * scale + 0.5))
        if scale <= 1.0:
            logits = logits_at_input_size(predict, scaled, flip)
        else:
            logits = sliding_window_logits(predict, scaled, crop, flip)
        logits = np.asarray(resize_bilinear(jnp.asarray(logits[None]), (height, width)))[0]
        # float64: exp of float32 logits overflows above 88 (untrained or overconfident nets).
        scores = np.exp(logits.astype(np.float64))
        total = scores if total is None else total + scores
    return total
