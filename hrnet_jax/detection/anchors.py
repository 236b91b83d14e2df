"""The anchor generator of the two-stage detectors (mmdet's `AnchorGenerator` with centre
offset 0, which the HRNetV2p detection checkpoints were trained with)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def base_anchors(stride: int, scales: Sequence[float] = (8.0,),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> np.ndarray:
    """One cell's anchors (A, 4), centred on the cell's corner (mmdet's centre offset 0):
    ratio r = height / width, area (stride x scale)^2; ordered ratio-major, then scale."""
    h_ratios = np.sqrt(np.asarray(ratios, np.float64))
    widths = (stride / h_ratios[:, None] * np.asarray(scales)[None, :]).reshape(-1)
    heights = (stride * h_ratios[:, None] * np.asarray(scales)[None, :]).reshape(-1)
    return np.stack([-widths / 2, -heights / 2, widths / 2, heights / 2], -1).astype(np.float32)


def grid_anchors(shape: tuple[int, int], stride: int, scales: Sequence[float] = (8.0,),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> np.ndarray:
    """A level's anchors (H x W x A, 4): each cell's (row-major) base anchors shifted to
    (x, y) = (column, row) x stride, as mmdet's grid_priors."""
    ys, xs = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    shifts = np.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4) * stride
    return (shifts + base_anchors(stride, scales, ratios)[None]).reshape(-1, 4).astype(np.float32)
