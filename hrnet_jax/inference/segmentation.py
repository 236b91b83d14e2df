"""Whole-image segmentation inference as HRNet-Semantic-Segmentation evaluates.

Per scale, the image's long side is resized to base_size x scale and the network's scores are
taken as the reference does: the logits of the image and (with flip) of its mirror are averaged
(the mirror's left/right classes, if the dataset has any, swapped back first), exponentiated,
and resized bilinearly back to the image; the scales' scores are summed.

Which scaled images run whole and which by sliding windows (crop-sized, stride 2/3 of the crop,
overlapping scores averaged) follows one of the reference's two rules:
- Cityscapes: scales <= 1 run whole, larger ones by windows whose last row and column sit flush
  with the border.
- `pad_to_crop` (LIP, PASCAL-Context): an image that fits in the crop is padded black to it and
  run whole, a larger one (padded black up to the crop where smaller) by windows from the top
  left whose last ones are padded black.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from hrnet_jax.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from hrnet_jax.data.transforms import resize_long_side
from hrnet_jax.models.layers import interpolation_matrix, resize_bilinear

# (1, h, w, 3) normalised image -> (1, h', w', classes) logits at any resolution.
Predict = Callable[[np.ndarray], np.ndarray]
FlipPairs = Sequence[tuple[int, int]]

# Black in normalised pixels: what the reference pads with (a plain 0 would be the mean colour).
BLACK = -IMAGENET_MEAN / IMAGENET_STD


def class_permutation(num_classes: int, flip_pairs: FlipPairs) -> np.ndarray:
    """Indices that turn a mirrored image's class scores into the original's."""
    order = np.arange(num_classes)
    for left, right in flip_pairs:
        order[left], order[right] = right, left
    return order


def resize_scores(scores: np.ndarray, size: Sequence[int], align_corners: bool = False
                  ) -> np.ndarray:
    """Bilinear resize of (h, w, classes) scores on the host, in their own precision (float64
    scores keep exp(logits) above float32's range), with PyTorch's sampling rule."""
    if scores.shape[:2] == tuple(size):
        return scores
    # Each output row (column) from its two source rows (columns): the interpolation matrix's
    # two taps, not a dense product with it (which cost a 1.75-scale Cityscapes map ~10 s).
    lower, upper, w_lower, w_upper = _taps(scores.shape[0], size[0], align_corners)
    rows = (scores[lower] * w_lower.astype(scores.dtype)[:, None, None]
            + scores[upper] * w_upper.astype(scores.dtype)[:, None, None])
    lower, upper, w_lower, w_upper = _taps(scores.shape[1], size[1], align_corners)
    return (rows[:, lower] * w_lower.astype(scores.dtype)[None, :, None]
            + rows[:, upper] * w_upper.astype(scores.dtype)[None, :, None])


@functools.lru_cache(maxsize=32)
def _taps(size_in: int, size_out: int, align_corners: bool
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """interpolation_matrix's two non-zero entries a row: their columns and weights (the
    second 0 where a row has one), so that the taps give the matrix product's very values."""
    matrix = interpolation_matrix(size_in, size_out, align_corners)
    lower = np.argmax(matrix > 0, axis=1)
    upper = np.minimum(lower + 1, size_in - 1)
    index = np.arange(size_out)
    return lower, upper, matrix[index, lower], np.where(upper != lower, matrix[index, upper], 0)


def logits_at_input_size(predict: Predict, image: np.ndarray, flip: bool,
                         flip_pairs: FlipPairs = (), align_corners: bool = False) -> np.ndarray:
    """(h, w, classes) float32 logits of one normalised (h, w, 3) image, upsampled bilinearly
    to its size; with `flip`, averaged with the mirrored image's (mirrored back, the classes of
    `flip_pairs` swapped back)."""
    size = image.shape[:2]

    def forward(x):
        out = np.asarray(predict(x[None]), np.float32)
        if out.shape[1:3] != size:
            out = np.asarray(resize_bilinear(jnp.asarray(out), size, align_corners))
        return out[0]

    logits = forward(image)
    if flip:
        mirrored = forward(np.ascontiguousarray(image[:, ::-1]))[:, ::-1]
        logits = 0.5 * (logits + mirrored[..., class_permutation(logits.shape[-1], flip_pairs)])
    return logits


def whole_image_scores(predict: Predict, image: np.ndarray, flip: bool, flip_pairs: FlipPairs = (),
                       align_corners: bool = False) -> np.ndarray:
    """exp(logits) (float64: untrained or overconfident nets exceed float32 above 88)."""
    return np.exp(logits_at_input_size(predict, image, flip, flip_pairs,
                                       align_corners).astype(np.float64))


def sliding_window_scores(predict: Predict, image: np.ndarray, crop: Sequence[int], flip: bool,
                          flip_pairs: FlipPairs = (), align_corners: bool = False,
                          pad_to_crop: bool = False) -> np.ndarray:
    """Scores of an image larger than the crop: crop-sized windows at stride 2/3 of the crop,
    overlapping scores averaged; the last windows flush with the border, or (`pad_to_crop`)
    running over it, padded black."""
    height, width = image.shape[:2]
    crop_h, crop_w = crop
    if pad_to_crop and (height < crop_h or width < crop_w):
        image = _pad(image, (max(height, crop_h), max(width, crop_w)))
    full_h, full_w = image.shape[:2]
    stride_h, stride_w = int(crop_h * 2 / 3), int(crop_w * 2 / 3)
    rows = max(math.ceil((full_h - crop_h) / stride_h), 0) + 1
    cols = max(math.ceil((full_w - crop_w) / stride_w), 0) + 1
    total, count = None, np.zeros((full_h, full_w, 1), np.float64)
    for r in range(rows):
        for c in range(cols):
            if pad_to_crop:
                y0, x0 = r * stride_h, c * stride_w
                y1, x1 = min(y0 + crop_h, full_h), min(x0 + crop_w, full_w)
            else:
                y1, x1 = min(r * stride_h + crop_h, full_h), min(c * stride_w + crop_w, full_w)
                y0, x0 = max(y1 - crop_h, 0), max(x1 - crop_w, 0)
            # One window shape: one compile. Cityscapes' windows are never smaller than the crop.
            window = _pad(image[y0:y1, x0:x1], (crop_h, crop_w))
            scores = whole_image_scores(predict, window, flip, flip_pairs,
                                        align_corners)[:y1 - y0, :x1 - x0]
            if total is None:
                total = np.zeros((full_h, full_w, scores.shape[-1]), np.float64)
            total[y0:y1, x0:x1] += scores
            count[y0:y1, x0:x1] += 1
    return (total / count)[:height, :width]


def _pad(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bottom and right padded black to `size`."""
    if image.shape[:2] == tuple(size):
        return image
    padded = np.zeros((*size, 3), np.float32) + BLACK
    padded[:image.shape[0], :image.shape[1]] = image
    return padded


def multi_scale_probabilities(predict: Predict, image: np.ndarray, scales: Sequence[float],
                              flip: bool, base_size: int, crop: Sequence[int],
                              flip_pairs: FlipPairs = (), align_corners: bool = False,
                              pad_to_crop: bool = False) -> np.ndarray:
    """Sum over scales of exp(logits) at the image's size: (h, w, classes) float64."""
    height, width = image.shape[:2]
    total = None
    for scale in scales:
        scaled, _ = resize_long_side(image, None, int(base_size * scale + 0.5))
        if pad_to_crop and max(scaled.shape[:2]) <= min(crop):
            scores = whole_image_scores(predict, _pad(scaled, crop), flip, flip_pairs,
                                        align_corners)[:scaled.shape[0], :scaled.shape[1]]
        elif scale <= 1.0 and not pad_to_crop:
            scores = whole_image_scores(predict, scaled, flip, flip_pairs, align_corners)
        else:
            scores = sliding_window_scores(predict, scaled, crop, flip, flip_pairs, align_corners,
                                           pad_to_crop)
        scores = resize_scores(scores, (height, width), align_corners)
        total = scores if total is None else total + scores
    return total
