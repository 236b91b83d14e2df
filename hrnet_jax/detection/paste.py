"""Mask R-CNN's masks pasted into their image on the device and handed back as COCO run
lengths: what evaluation keeps of a mask is its compressed RLE string, and the host's share is
now one pass over the runs of all an image's masks (pasting 100 masks and scanning them was 11
ms an image on the host against 1.1 ms of network on an H100).

The paste: each (S, S) mask probability spread over its x0, y0, x1, y1 box, bilinear at the
pixel centres, zero outside the box (mmdet's grid_sample paste), thresholded at 0.5. Its
sampling points are OpenCV's as `hrnet_jax.metrics.coco.pasted_regions` warps them (the map of
the box's region, each row's and column's point rounded to float32 on the host, as OpenCV
rounds them), so the masks are that function's: a pixel whose probability lies within float32
rounding of the threshold may differ (tests: none in 500 random boxes).

The runs: a mask's pixels in COCO's column-major order change value at a set of positions, its
transitions; the device finds every mask's, in order, into a buffer of `capacity` positions
(fixed shapes: one compiled program an image size bucket), with their count a mask. The host
turns positions into runs and runs into strings (`hrnet_jax.data.detection.rle_strings`). An
image whose masks have more transitions than the buffer holds is run again with a larger one.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data.detection import rle_strings

BUCKET = 128  # images are padded to multiples of this (a few compiled shapes serve COCO)
CAPACITY = 1 << 15  # transitions an image: 100 masks of up to ~160 columns each


def sampling(boxes: np.ndarray, size: int, height: int, width: int) -> dict[str, np.ndarray]:
    """x0, y0, x1, y1 boxes (D, 4) in a height x width image -> each box's region (top, left,
    bottom, right: the pixels whose mask point lies within a pixel of the (size x size) mask)
    and the mask points of the image's columns (D, Wb) and rows (D, Hb), Wb and Hb the padded
    bucket, float32 as OpenCV's warpAffine computes them for the region."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0 = boxes[:, 0], boxes[:, 1]
    w = np.maximum(boxes[:, 2] - x0, 1e-3)
    h = np.maximum(boxes[:, 3] - y0, 1e-3)
    left = np.maximum(np.floor(x0 - 0.5 - 0.5 * w / size), 0)
    top = np.maximum(np.floor(y0 - 0.5 - 0.5 * h / size), 0)
    right = np.minimum(np.ceil(x0 - 0.5 + (size + 0.5) * w / size) + 1, width)
    bottom = np.minimum(np.ceil(y0 - 0.5 + (size + 0.5) * h / size) + 1, height)
    # region pixel (x, y) -> mask point (x scale_x + offset_x, y scale_y + offset_y)
    scale_x, scale_y = size / w, size / h
    offset_x = (left + 0.5 - x0) * scale_x - 0.5
    offset_y = (top + 0.5 - y0) * scale_y - 0.5
    bucket_height, bucket_width = bucket(height), bucket(width)
    columns = np.arange(bucket_width) - left[:, None]
    rows = np.arange(bucket_height) - top[:, None]
    # OpenCV: a column's point is the float32 multiply-add of float32 scale and offset (one
    # rounding, as an FMA: exact in float64 before the cast); a row's, y scale + offset in
    # float64, rounded once.
    column_points = (scale_x.astype(np.float32).astype(np.float64)[:, None] * columns
                     + offset_x.astype(np.float32)[:, None]).astype(np.float32)
    row_points = (rows * scale_y[:, None] + offset_y[:, None]).astype(np.float32)
    regions = np.stack([top, left, bottom, right], -1).astype(np.int32)
    return {"regions": regions, "columns": column_points, "rows": row_points}


def bucket(length: int) -> int:
    return -(-int(length) // BUCKET) * BUCKET


@functools.partial(jax.jit, static_argnames=("capacity", "threshold"))
def mask_transitions(probabilities: jax.Array, regions: jax.Array, columns: jax.Array,
                     rows: jax.Array, extent: jax.Array, capacity: int = CAPACITY,
                     threshold: float = 0.5) -> tuple[jax.Array, jax.Array]:
    """(D, S, S) mask probabilities and their `sampling` -> the masks' transitions in COCO's
    column-major order (positions x * H + y in the (H, W) = `extent` image, mask by mask, in
    order; `capacity` of them, the rest zero) and their count a mask (D,)."""
    count, size = probabilities.shape[:2]
    height, width = extent[0], extent[1]
    x = jnp.arange(columns.shape[1])
    y = jnp.arange(rows.shape[1])
    top, left, bottom, right = (regions[:, i, None] for i in range(4))
    column_inside = (x >= left) & (x < right) & (x < width)  # (D, Wb)
    row_inside = (y >= top) & (y < bottom) & (y < height)  # (D, Hb)
    x0, y0 = jnp.floor(columns), jnp.floor(rows)
    fraction_x, fraction_y = (columns - x0)[:, :, None], (rows - y0)[:, None, :]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    flat = probabilities.reshape(count, size * size).astype(jnp.float32)

    def point(yy: jax.Array, xx: jax.Array) -> jax.Array:  # (D, Wb, Hb), zero off the mask
        inside = ((xx >= 0) & (xx < size))[:, :, None] & ((yy >= 0) & (yy < size))[:, None, :]
        index = jnp.clip(yy, 0, size - 1)[:, None, :] * size + jnp.clip(xx, 0, size - 1)[:, :, None]
        found = jnp.take_along_axis(flat, index.reshape(count, -1), 1).reshape(index.shape)
        return jnp.where(inside, found, 0.0)

    upper_left, upper_right = point(y0, x0), point(y0, x0 + 1)
    lower_left, lower_right = point(y0 + 1, x0), point(y0 + 1, x0 + 1)
    upper = upper_left + fraction_x * (upper_right - upper_left)
    lower = lower_left + fraction_x * (lower_right - lower_left)
    value = upper + fraction_y * (lower - upper)
    bits = (value >= threshold) & column_inside[:, :, None] & row_inside[:, None, :]
    # Each pixel against the one before it in column-major order: the one above, or for a
    # column's first pixel the last of the column before (the first pixel's: a zero).
    last_row = jax.lax.dynamic_index_in_dim(bits, height - 1, axis=2, keepdims=False)
    before_column = jnp.concatenate([jnp.zeros_like(last_row[:, :1]), last_row[:, :-1]], 1)
    previous = jnp.concatenate([before_column[:, :, None], bits[:, :, :-1]], 2)
    changes = (bits != previous) & (x < width)[None, :, None] & (y < height)[None, None, :]
    (found,) = jnp.nonzero(changes.reshape(-1), size=capacity, fill_value=0)
    bucket_height, bucket_width = bits.shape[2], bits.shape[1]
    positions = (found // bucket_height % bucket_width) * height + found % bucket_height
    return positions.astype(jnp.int32), changes.sum((1, 2)).astype(jnp.int32)


def pasted_rles(probabilities: Any, boxes: np.ndarray, height: int, width: int,
                valid: np.ndarray | None = None) -> np.ndarray:
    """(D, S, S) mask probabilities (on the device or not) pasted in their x0, y0, x1, y1
    `boxes` of a height x width image -> the masks' compressed RLE strings (D,), those of
    `valid` only where given (the rest: left out)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    count = len(boxes)
    if valid is None:
        valid = np.ones(count, bool)
    placed = sampling(boxes, probabilities.shape[-1], height, width)
    placed["regions"][~np.asarray(valid, bool)] = 0  # an empty region: no pixel, no run
    extent = np.array([height, width], np.int32)
    capacity = CAPACITY
    while True:
        positions, counts = jax.device_get(mask_transitions(
            probabilities, placed["regions"], placed["columns"], placed["rows"], extent,
            capacity))
        if counts.sum() <= capacity:
            break
        capacity = 1 << int(counts.sum() - 1).bit_length()  # rare: a larger program
    strings = rle_strings(*runs(positions, counts, height * width))
    return np.asarray(strings, object)[np.asarray(valid, bool)].reshape(-1)


def runs(positions: np.ndarray, counts: np.ndarray, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks' transitions (concatenated, `counts` a mask) -> their uncompressed RLE runs
    (concatenated) and the runs a mask (one more than its transitions): from 0 to the first
    transition, between transitions, from the last to the image's end."""
    counts = np.asarray(counts, np.int64)
    ends = np.cumsum(counts)
    positions = np.asarray(positions[:ends[-1] if len(ends) else 0], np.int64)
    lengths = counts + 1
    starts = np.cumsum(lengths) - lengths  # where a mask's runs begin
    # Each mask's boundaries: 0, its transitions, the image's end.
    boundaries = np.zeros(int(lengths.sum()) + len(counts), np.int64)
    first = starts + np.arange(len(counts))  # each mask's leading 0
    slots = np.ones(len(boundaries), bool)
    slots[first] = False
    slots[first + lengths] = False  # each mask's closing `pixels`
    boundaries[first + lengths] = pixels
    boundaries[slots] = positions
    steps = np.diff(boundaries)
    keep = np.ones(len(steps), bool)
    keep[(first + lengths)[:-1]] = False  # the step from one mask's end to the next's 0
    return steps[keep], lengths
