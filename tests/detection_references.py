"""Inputs the detection operations' tests share."""

from __future__ import annotations

import numpy as np


def random_boxes(seed=1, n=2, r=40, size=(96, 128)):
    """Boxes of every scale (all four levels), some elongated, some crossing the border, one of
    zero width (an inverted box makes torchvision's adaptive grid negative: it fails)."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(np.log(4), np.log(700), (n, r, 1)))
    aspect = np.exp(rng.uniform(-1.5, 1.5, (n, r, 1)))
    side = np.concatenate([scale * np.sqrt(aspect), scale / np.sqrt(aspect)], -1)
    centre = rng.uniform(-10, [size[1] + 10, size[0] + 10], (n, r, 2))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], -1)
    boxes[:, 0, 2] = boxes[:, 0, 0]            # zero width
    return boxes.astype(np.float32)
