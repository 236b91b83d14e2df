"""Host-side augmentations (numpy + OpenCV), deterministic given the numpy Generator that grain
hands each record (seeded from the run's seed and the record's position)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def resize_long_side(image: np.ndarray, label: np.ndarray | None, long_side: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Both resized so the longer side is `long_side`: the image bilinearly, labels nearest."""
    h, w = image.shape[:2]
    if h > w:
        size = (int(w * long_side / h + 0.5), long_side)
    else:
        size = (long_side, int(h * long_side / w + 0.5))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return image, label


def pad_to(image: np.ndarray, label: np.ndarray, size: tuple[int, int], ignore: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right up to `size`: the image with 0 (black, before normalisation), the label
    with the ignore value."""
    pad_h, pad_w = max(size[0] - image.shape[0], 0), max(size[1] - image.shape[1], 0)
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=ignore)
    return image, label


def random_scale_crop_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                           base_size: int, scales: Sequence[float], crop_size: tuple[int, int],
                           flip: bool = True, ignore: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """The segmentation reference's training augmentation: the long side scaled to
    base_size x (a scale drawn from `scales`), padded to the crop, a random crop, a coin-flip
    horizontal mirror."""
    scale = scales[rng.integers(len(scales))] if len(scales) else 1.0
    image, label = resize_long_side(image, label, int(base_size * scale + 0.5))
    image, label = pad_to(image, label, crop_size, ignore)
    y = rng.integers(image.shape[0] - crop_size[0] + 1)
    x = rng.integers(image.shape[1] - crop_size[1] + 1)
    image = image[y:y + crop_size[0], x:x + crop_size[1]]
    label = label[y:y + crop_size[0], x:x + crop_size[1]]
    if flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def scale_steps(low: float, high: float, step: float) -> tuple[float, ...]:
    """low, low + step, ..., high (inclusive), rounded: 0.5, 0.6, ..., 2.1."""
    count = int(round((high - low) / step)) + 1
    return tuple(round(low + k * step, 6) for k in range(count))
