"""RoIAlign over a feature pyramid, in static shapes and exact (Mask R-CNN, He et al. 2017;
`aligned` as Detectron2 / torchvision `roi_align(aligned=True)` / mmcv).

Each RoI is pooled from one pyramid level, chosen as mmdet's `SingleRoIExtractor` does:
level = floor(log2(sqrt(area) / finest_scale + 1e-6)), clamped to the levels.

A bin of the `output_size` grid averages `grid_y x grid_x` bilinear samples at the centres of a
regular sub-grid; `sampling_ratio = 0` is the adaptive rule, ceil(RoI side / output size)
samples a side, a count that depends on the RoI. Bilinear sampling averaged over such a grid
is separable: the value of bin (p, q) is sum over pixels (y, x) of row_weight[p, y] x
column_weight[q, x] x feature[y, x], where row_weight[p, y] is the average over the bin's
sample rows of each sample's tent weight on row y (the reference's clamping at the borders
included). So the weights are computed per axis, for any number of samples, and the RoI's
features are read once from the rectangle of pixels its samples touch.

Static shapes: on a pyramid, the touched rectangle is gathered as a flat list of `window` pixels. Its bound
comes from the level mapping: a RoI the mapping sends to level l < last has
sqrt(area) < finest_scale x 2^(l+1) input pixels, so its touched rows x columns are bounded
(a long thin RoI touches few rows); the last level's bound is its whole map. Every RoI inside
the canvas that the mapping sends to a level is therefore pooled exactly as the reference
does, with any number of samples (tests/test_roi_align.py compares with torchvision). RoIs
given explicit `levels` use the whole-map bound. From a single map (HTC's semantic features,
where RoIs of every size meet one stride) the weights span whole axes and the pooling is two
contractions, (output x H) and (output x W), with no gather.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np


def map_levels(boxes: jnp.ndarray, num_levels: int, finest_scale: float = 56.0) -> jnp.ndarray:
    """The pyramid level of each x0, y0, x1, y1 box (..., 4), as mmdet's map_roi_levels."""
    scale = jnp.sqrt(jnp.maximum((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]),
                                 0.0))
    level = jnp.floor(jnp.log2(scale / finest_scale + 1e-6))
    return jnp.clip(level, 0, num_levels - 1).astype(jnp.int32)


def window_size(shapes: Sequence[tuple[int, int]], strides: Sequence[int],
                finest_scale: float = 56.0, mapped: bool = True) -> int:
    """How many pixels the rectangle a RoI's samples touch can hold, at most, over the levels
    of `shapes` (height, width): rows touched <= floor(RoI height) + 3 (in feature pixels) and
    likewise columns, within the map; for a level other than the last the mapping bounds the
    RoI's area (`mapped`), the last level's bound is its whole map."""
    bound = 0
    for level, (height, width) in enumerate(shapes):
        if not mapped or level == len(shapes) - 1:
            bound = max(bound, height * width)
            continue
        area = (finest_scale * 2 ** (level + 1) / strides[level]) ** 2 * 1.001
        for rows in range(1, height + 1):
            columns = width if rows <= 3 else min(width, math.floor(area / (rows - 3)) + 3)
            bound = max(bound, rows * columns)
    return bound


def _axis_weights(start: jnp.ndarray, length: jnp.ndarray, size: jnp.ndarray, grid: jnp.ndarray,
                  output: int, max_grid: int, span: int, first: jnp.ndarray | None = None):
    """One axis's weights: for RoIs (...) starting at `start` with `length` (feature pixels)
    on a map of `size` pixels with `grid` samples a bin, each bin's weight on the `span` pixels
    from `first` on (..., output, span), `first` (...) and how many pixels are touched (...).
    `first` defaults to the first pixel the RoI's samples touch."""
    bin_size = length / output
    g = jnp.maximum(grid, 1).astype(jnp.float32)[..., None, None]
    p = jnp.arange(output, dtype=jnp.float32)[:, None]
    k = jnp.arange(max_grid, dtype=jnp.float32)[None, :]
    position = start[..., None, None] + p * bin_size[..., None, None] \
        + (k + 0.5) * bin_size[..., None, None] / g  # (..., output, K)
    last = (size - 1).astype(jnp.float32)[..., None, None]
    used = (k < grid[..., None, None]) & (position >= -1.0) & (position <= last + 1.0)
    clamped = jnp.clip(position, 0.0, last)  # the reference's border rule
    low = jnp.floor(clamped)
    fraction = clamped - low
    if first is None:
        first = jnp.floor(jnp.clip(start + 0.5 * bin_size / jnp.maximum(grid, 1), 0.0,
                                   (size - 1).astype(jnp.float32)))
    end = jnp.minimum(jnp.floor(jnp.clip(start + length - 0.5 * bin_size / jnp.maximum(grid, 1),
                                         0.0, (size - 1).astype(jnp.float32))) + 2, size)
    weight = used / g  # each sample's share of the bin's average
    local = (low - first[..., None, None]).astype(jnp.int32)
    local = local.reshape(-1, output, max_grid)  # (RoIs, P, K); the RoI count may be symbolic
    table = jnp.zeros((local.shape[0], output, span), jnp.float32)
    rows = jnp.arange(local.shape[0])[:, None, None]
    bins = jnp.arange(output)[None, :, None]
    for offset, share in ((0, 1.0 - fraction), (1, fraction)):
        table = table.at[rows, bins, local + offset].add(
            (weight * share).reshape(local.shape), mode="drop")
    table = table.reshape(*start.shape, output, span)
    return table, first.astype(jnp.int32), (end - first).astype(jnp.int32)


def roi_align(features: Sequence[jnp.ndarray], strides: Sequence[int], boxes: jnp.ndarray,
              output_size: int, sampling_ratio: int = 0, finest_scale: float = 56.0,
              aligned: bool = True, levels: jnp.ndarray | None = None) -> jnp.ndarray:
    """Pool RoIs from a pyramid.

    features: per level (N, H_l, W_l, C), finest first, with `strides`. boxes: (N, R, 4) as
    x0, y0, x1, y1 in input pixels, R per image. levels: (N, R) to override the level mapping.
    Returns (N, R, output_size, output_size, C) in the features' dtype."""
    shapes = [tuple(f.shape[1:3]) for f in features]
    mapped = levels is None
    if levels is None:
        levels = map_levels(boxes, len(features), finest_scale)
    heights = jnp.asarray([h for h, _ in shapes], jnp.int32)
    widths = jnp.asarray([w for _, w in shapes], jnp.int32)
    offsets = jnp.asarray(np.cumsum([0, *[h * w for h, w in shapes][:-1]]), jnp.int32)
    n, channels = features[0].shape[0], features[0].shape[-1]
    table = jnp.concatenate([f.reshape(n, -1, channels) for f in features], 1)  # (N, T, C)

    scale = (1.0 / jnp.asarray(strides, jnp.float32))[levels]
    shift = 0.5 if aligned else 0.0
    x0, y0 = boxes[..., 0] * scale - shift, boxes[..., 1] * scale - shift
    width, height = boxes[..., 2] * scale - shift - x0, boxes[..., 3] * scale - shift - y0
    if not aligned:  # the original RoIAlign forces a RoI to be at least one pixel
        width, height = jnp.maximum(width, 1.0), jnp.maximum(height, 1.0)
    longest = max(max(shape) for shape in shapes)
    max_grid = sampling_ratio if sampling_ratio > 0 else -(-longest // output_size) + 1
    if sampling_ratio > 0:
        grid_y = grid_x = jnp.full(levels.shape, sampling_ratio, jnp.int32)
    else:  # boxes inside the canvas never need more than max_grid
        grid_y = jnp.clip(jnp.ceil(height / output_size), 0, max_grid).astype(jnp.int32)
        grid_x = jnp.clip(jnp.ceil(width / output_size), 0, max_grid).astype(jnp.int32)
    map_h, map_w = heights[levels], widths[levels]
    if len(features) == 1:  # one map (HTC's semantic features): the weights over whole axes
        (height_1, width_1), = shapes
        zero = jnp.zeros_like(y0)
        row_weight, _, _ = _axis_weights(y0, height, map_h, grid_y, output_size, max_grid,
                                         height_1 + 1, zero)
        col_weight, _, _ = _axis_weights(x0, width, map_w, grid_x, output_size, max_grid,
                                         width_1 + 1, zero)
        across = jnp.einsum("nrqw,nhwc->nrqhc", col_weight[..., :width_1].astype(table.dtype),
                            features[0], preferred_element_type=jnp.float32)
        pooled = jnp.einsum("nrph,nrqhc->nrpqc", row_weight[..., :height_1], across)
        return pooled.astype(features[0].dtype)
    row_weight, row0, rows = _axis_weights(y0, height, map_h, grid_y, output_size, max_grid,
                                           longest + 1)
    col_weight, col0, cols = _axis_weights(x0, width, map_w, grid_x, output_size, max_grid,
                                           longest + 1)

    # The touched rectangle, rows x cols pixels, as a flat list of `window` pixels.
    window = window_size(shapes, strides, finest_scale, mapped)
    pixel = jnp.arange(window)
    cols_safe = jnp.maximum(cols, 1)[..., None]
    row_in, col_in = pixel // cols_safe, pixel % cols_safe  # (N, R, window)
    inside = row_in < rows[..., None]
    index = (offsets[levels][..., None] + (row0[..., None] + row_in) * map_w[..., None]
             + col0[..., None] + col_in)
    index = jnp.where(inside, index, 0)
    values = jnp.take_along_axis(table, index.reshape(n, -1)[..., None], axis=1)
    values = values.reshape(n, -1, window, channels)  # (N, R, window, C)
    row_at = jnp.take_along_axis(row_weight, jnp.minimum(row_in, row_weight.shape[-1] - 1)[
        ..., None, :], -1)  # (N, R, P, window)
    col_at = jnp.take_along_axis(col_weight, jnp.minimum(col_in, col_weight.shape[-1] - 1)[
        ..., None, :], -1)  # (N, R, Q, window)
    weight = row_at[..., :, None, :] * col_at[..., None, :, :] * inside[..., None, None, :]
    pooled = jnp.einsum("nrpqw,nrwc->nrpqc", weight.astype(table.dtype), values,
                        preferred_element_type=jnp.float32)
    return pooled.astype(features[0].dtype)


__all__ = ["map_levels", "roi_align", "window_size"]
