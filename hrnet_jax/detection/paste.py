"""Mask R-CNN's masks pasted into their image and run-length coded on the device: what
evaluation keeps of a mask is its COCO string, and the host's share is now to cut the image's
characters into strings (pasting 100 masks and encoding them was 8-11 ms an image on the host
against 1.1 ms of network on an H100).

The paste: each (S, S) mask probability spread over its x0, y0, x1, y1 box, bilinear at the
pixel centres, zero outside the box (mmdet's grid_sample paste), thresholded at 0.5. Its
sampling points are OpenCV's as `hrnet_jax.metrics.coco.pasted_regions` warps them (the map of
the box's region, each row's and column's point rounded to float32 on the host, as OpenCV
rounds them), so the masks are that function's but where a probability lies within float32
rounding of the threshold (tests: 1 pixel in 500 random masks).

The coding: a mask's pixels in COCO's column-major order change value at a set of positions,
its transitions; the device finds every mask's, in order, into a buffer of `capacity`
positions (fixed shapes: one compiled program an image size bucket), then their runs and the
runs' characters (`rle_characters`, the format of `hrnet_jax.data.detection.rle_strings`).
An image whose masks have more transitions (or characters) than the buffers hold is run again
with larger ones. The work is a few passes over D x H x W pixels (100 x 512 x 640 for COCO):
memory-bound, a fraction of the network's time on an accelerator.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.inference.warp import bucket

CAPACITY = 1 << 15  # transitions an image: 100 masks of up to ~160 columns each


def box_regions(boxes: np.ndarray, size: int, height: int, width: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Where each (size x size) mask lands: x0, y0, x1, y1 boxes (D, 4) in a height x width
    image -> their regions (D, 4) top, left, bottom, right (the pixels whose mask point lies
    within a pixel of the mask: beyond, the bilinear weights meet zeros only; empty when
    bottom <= top or right <= left) and the maps (D, 2, 3) from a region's pixel (x, y) to its
    mask point ((x + left + 0.5 - x0) / w S - 0.5, ...), computed in the boxes' precision as
    OpenCV is then handed them (float64)."""
    boxes = np.asarray(boxes)
    boxes = boxes.reshape(-1, 4).astype(boxes.dtype if boxes.dtype.kind == "f" else np.float32)
    x0, y0, x1, y1 = boxes.T
    w, h = np.maximum(x1 - x0, 1e-3), np.maximum(y1 - y0, 1e-3)
    left = np.maximum(np.floor(x0 - 0.5 - 0.5 * w / size), 0).astype(np.int64)
    top = np.maximum(np.floor(y0 - 0.5 - 0.5 * h / size), 0).astype(np.int64)
    right = np.minimum(np.ceil(x0 - 0.5 + (size + 0.5) * w / size).astype(np.int64) + 1, width)
    bottom = np.minimum(np.ceil(y0 - 0.5 + (size + 0.5) * h / size).astype(np.int64) + 1, height)
    half = boxes.dtype.type(0.5)
    maps = np.zeros((len(boxes), 2, 3), np.float64)
    maps[:, 0, 0], maps[:, 1, 1] = size / w, size / h
    maps[:, 0, 2] = (left.astype(boxes.dtype) + half - x0) * size / w - 0.5
    maps[:, 1, 2] = (top.astype(boxes.dtype) + half - y0) * size / h - 0.5
    return np.stack([top, left, bottom, right], -1), maps


def sampling(boxes: np.ndarray, size: int, height: int, width: int) -> dict[str, np.ndarray]:
    """x0, y0, x1, y1 boxes (D, 4) in a height x width image -> each box's region
    (`box_regions`) and the mask points of the image's columns (D, Wb) and rows (D, Hb), Wb
    and Hb the padded bucket, float32 as OpenCV's warpAffine computes them from the region's
    map."""
    regions, maps = box_regions(boxes, size, height, width)
    top, left = regions[:, 0], regions[:, 1]
    columns = np.arange(bucket(width)) - left[:, None]
    rows = np.arange(bucket(height)) - top[:, None]
    # OpenCV: a column's point is the float32 multiply-add of float32 scale and offset (one
    # rounding, as an FMA: exact in float64 before the cast); a row's, y scale + offset in
    # float64, rounded once.
    scale_x, offset_x = maps[:, 0, 0], maps[:, 0, 2]
    column_points = (scale_x.astype(np.float32).astype(np.float64)[:, None] * columns
                     + offset_x.astype(np.float32)[:, None]).astype(np.float32)
    row_points = (rows * maps[:, 1, 1, None] + maps[:, 1, 2, None]).astype(np.float32)
    return {"regions": regions.astype(np.int32), "columns": column_points, "rows": row_points}


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


def rle_characters(positions: jax.Array, counts: jax.Array, pixels: jax.Array,
                   capacity: int) -> tuple[jax.Array, jax.Array]:
    """Masks' transitions (`mask_transitions`) -> their COCO strings' characters, mask after
    mask (`capacity` of them, the rest zero), and the characters a mask (D,): the runs between
    transitions (from 0, to the image's end), each less the one two before it from a mask's
    fourth run, in 5-bit groups (`hrnet_jax.data.detection.rle_strings`, in fixed shapes)."""
    masks, slots = counts.shape[0], positions.shape[0] + counts.shape[0]
    lengths = counts + 1  # runs a mask
    ends = jnp.cumsum(lengths)
    slot = jnp.arange(slots)
    owner = jnp.searchsorted(ends, slot, side="right")  # the mask of a run slot (masks: none)
    used = owner < masks
    owner = jnp.minimum(owner, masks - 1)
    index = slot - (ends[owner] - lengths[owner])  # the run's index in its mask
    before = ends[owner] - lengths[owner] - owner  # the mask's first transition
    last = positions.shape[0] - 1
    upper = jnp.where(index < counts[owner],
                      positions[jnp.clip(before + index, 0, last)], pixels)
    lower = jnp.where(index > 0, positions[jnp.clip(before + index - 1, 0, last)], 0)
    runs = upper - lower
    values = jnp.where(index > 2, runs - jnp.concatenate([jnp.zeros(2, runs.dtype), runs[:-2]]),
                       runs)
    bits = 32 - jax.lax.clz(values ^ (values >> 31))  # the bit length of |value| (or ~value)
    groups = jnp.where(used, jnp.maximum((bits + 5) // 5, 1), 0)
    group = jnp.arange(7)
    characters = 48 + (((values[:, None] >> (5 * group)) & 0x1F)
                       | ((group < groups[:, None] - 1) << 5))
    (written,) = jnp.nonzero((group < groups[:, None]).reshape(-1), size=capacity,
                             fill_value=0)
    text = characters.reshape(-1)[written].astype(jnp.uint8)
    return text, jax.ops.segment_sum(groups, owner, num_segments=masks)


@functools.partial(jax.jit, static_argnames=("capacity",))
def pasted_characters(probabilities: jax.Array, regions: jax.Array, columns: jax.Array,
                      rows: jax.Array, extent: jax.Array, capacity: int = CAPACITY
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The masks pasted by their `sampling` -> their COCO strings' characters (4 x `capacity`
    of them), the characters a mask and the transitions a mask (whose sum past `capacity`
    says to run again with a larger one)."""
    positions, counts = mask_transitions(probabilities, regions, columns, rows, extent,
                                         capacity)
    text, lengths = rle_characters(positions, counts, extent[0] * extent[1], 4 * capacity)
    return text, lengths, counts


def pasted_rles(probabilities: Any, boxes: np.ndarray, height: int, width: int,
                valid: np.ndarray | None = None) -> np.ndarray:
    """(D, S, S) mask probabilities (on the device or not) pasted in their x0, y0, x1, y1
    `boxes` of a height x width image -> the masks' compressed RLE strings (D,), those of
    `valid` only where given (the rest: left out)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    valid = np.ones(len(boxes), bool) if valid is None else np.asarray(valid, bool)
    placed = sampling(boxes, probabilities.shape[-1], height, width)
    placed["regions"][~valid] = 0  # an empty region: no pixel, no run
    extent = np.array([height, width], np.int32)
    capacity = CAPACITY
    while True:
        text, lengths, counts = jax.device_get(pasted_characters(
            probabilities, placed["regions"], placed["columns"], placed["rows"], extent,
            capacity))
        needed = max(int(counts.sum()), -(-int(lengths.sum()) // 4))
        if needed <= capacity:
            break
        capacity = 1 << (needed - 1).bit_length()  # rare: a larger program
    text = text[:lengths.sum()].tobytes().decode("ascii")
    ends = np.cumsum(lengths)
    return np.asarray([text[end - size:end] for end, size, keep in zip(ends, lengths, valid)
                       if keep], object).reshape(-1)
