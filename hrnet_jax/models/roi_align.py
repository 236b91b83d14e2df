"""RoIAlign over a feature pyramid, in static shapes (Mask R-CNN, He et al. 2017; `aligned` as
Detectron2 / torchvision `roi_align(aligned=True)` / mmcv).

Each RoI is pooled from one pyramid level, chosen as mmdet's `SingleRoIExtractor` does:
level = floor(log2(sqrt(area) / finest_scale + 1e-6)), clamped to the levels. All levels are
flattened into one table per image, so every RoI reads its own level with one gather: the cost
is that of pooling each RoI once, whatever the mix of levels.

A bin of the `output_size` grid averages `grid x grid` bilinear samples at the centres of a
regular sub-grid. `sampling_ratio > 0` fixes the grid; `sampling_ratio = 0` is the adaptive rule
(ceil(RoI side / output size) samples a side, a data-dependent count), computed here on a static
`max_samples` grid with the unused samples masked out: exactly the reference's result while a
RoI side spans at most `output_size x max_samples` feature pixels (with the default 4 and 7x7
boxes: 28 pixels, a 112-pixel RoI on the stride-4 level, which is the largest the level
mapping sends there unless elongated), and `max_samples` samples a side beyond it.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def map_levels(boxes: jnp.ndarray, num_levels: int, finest_scale: float = 56.0) -> jnp.ndarray:
    """The pyramid level of each x0, y0, x1, y1 box (..., 4), as mmdet's map_roi_levels."""
    scale = jnp.sqrt(jnp.maximum((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]),
                                 0.0))
    level = jnp.floor(jnp.log2(scale / finest_scale + 1e-6))
    return jnp.clip(level, 0, num_levels - 1).astype(jnp.int32)


def _axis_samples(start: jnp.ndarray, length: jnp.ndarray, size: jnp.ndarray, output: int,
                  grid: jnp.ndarray, max_grid: int):
    """One axis of the sampling grid: for each bin p and sample k, the two neighbouring pixel
    indices and their bilinear weights (zero for samples outside the map or beyond `grid`).

    start, length, size, grid: (N, R) RoI start, extent and map size in feature pixels, and
    samples per bin. Returns low, high (N, R, P, K) int32 and w_low, w_high (N, R, P, K)."""
    bin_size = length / output
    p = jnp.arange(output, dtype=jnp.float32)[:, None]
    k = jnp.arange(max_grid, dtype=jnp.float32)[None, :]
    grid_f = jnp.maximum(grid, 1).astype(jnp.float32)[..., None, None]
    position = (start[..., None, None] + p * bin_size[..., None, None]
                + (k + 0.5) * bin_size[..., None, None] / grid_f)
    size_f = size.astype(jnp.float32)[..., None, None]
    inside = (position >= -1.0) & (position <= size_f) & (k < grid[..., None, None])
    position = jnp.maximum(position, 0.0)
    low = jnp.floor(position).astype(jnp.int32)
    last = size[..., None, None] - 1
    at_edge = low >= last
    low = jnp.where(at_edge, last, low)
    high = jnp.where(at_edge, last, low + 1)
    fraction = jnp.where(at_edge, 0.0, position - low)
    return low, high, (1.0 - fraction) * inside, fraction * inside


def roi_align(features: Sequence[jnp.ndarray], strides: Sequence[int], boxes: jnp.ndarray,
              output_size: int, sampling_ratio: int = 0, finest_scale: float = 56.0,
              max_samples: int = 4, aligned: bool = True, levels: jnp.ndarray | None = None
              ) -> jnp.ndarray:
    """Pool RoIs from a pyramid.

    features: per level (N, H_l, W_l, C), finest first, with `strides`. boxes: (N, R, 4) as
    x0, y0, x1, y1 in input pixels, R per image. levels: (N, R) to override the level mapping.
    Returns (N, R, output_size, output_size, C) in the features' dtype."""
    num_levels = len(features)
    if levels is None:
        levels = map_levels(boxes, num_levels, finest_scale)
    heights = jnp.asarray([f.shape[1] for f in features], jnp.int32)
    widths = jnp.asarray([f.shape[2] for f in features], jnp.int32)
    sizes = [f.shape[1] * f.shape[2] for f in features]
    offsets = jnp.asarray(np.cumsum([0, *sizes[:-1]]), jnp.int32)  # each level's first row
    scales = 1.0 / jnp.asarray(strides, jnp.float32)
    n, channels = features[0].shape[0], features[0].shape[-1]
    table = jnp.concatenate([f.reshape(n, -1, channels) for f in features], 1)  # (N, T, C)

    scale = scales[levels]
    shift = 0.5 if aligned else 0.0
    x0, y0 = boxes[..., 0] * scale - shift, boxes[..., 1] * scale - shift
    width, height = boxes[..., 2] * scale - shift - x0, boxes[..., 3] * scale - shift - y0
    if not aligned:  # the original RoIAlign forces a RoI to be at least one pixel
        width, height = jnp.maximum(width, 1.0), jnp.maximum(height, 1.0)
    if sampling_ratio > 0:
        grid_y = grid_x = jnp.full(levels.shape, sampling_ratio, jnp.int32)
        max_grid = sampling_ratio
    else:
        grid_y = jnp.clip(jnp.ceil(height / output_size), 0, max_samples).astype(jnp.int32)
        grid_x = jnp.clip(jnp.ceil(width / output_size), 0, max_samples).astype(jnp.int32)
        max_grid = max_samples
    map_h, map_w = heights[levels], widths[levels]
    y_low, y_high, wy_low, wy_high = _axis_samples(y0, height, map_h, output_size, grid_y, max_grid)
    x_low, x_high, wx_low, wx_high = _axis_samples(x0, width, map_w, output_size, grid_x, max_grid)

    # The 4 neighbours of every (bin row, sample row, bin column, sample column) point.
    rows = jnp.stack([y_low, y_high], -1)[:, :, :, :, None, None, :, None]  # (N,R,P,K,1,1,2,1)
    cols = jnp.stack([x_low, x_high], -1)[:, :, None, None, :, :, None, :]  # (N,R,1,1,P,K,1,2)
    row_w = jnp.stack([wy_low, wy_high], -1)[:, :, :, :, None, None, :, None]
    col_w = jnp.stack([wx_low, wx_high], -1)[:, :, None, None, :, :, None, :]
    base = offsets[levels][:, :, None, None, None, None, None, None]
    index = base + rows * map_w[:, :, None, None, None, None, None, None] + cols
    weight = row_w * col_w / jnp.maximum(grid_y * grid_x, 1)[:, :, None, None, None, None, None,
                                                                None].astype(jnp.float32)
    r = boxes.shape[1]
    flat_index = index.reshape(n, -1)
    values = jnp.take_along_axis(table, flat_index[..., None], axis=1)  # (N, points, C)
    values = values.reshape(n, r, output_size, max_grid, output_size, max_grid, 2, 2, channels)
    pooled = jnp.einsum("nrpkqlab,nrpkqlabc->nrpqc", weight.astype(table.dtype), values,
                        preferred_element_type=jnp.float32)
    return pooled.astype(features[0].dtype)

