"""Boxes as x0, y0, x1, y1 in input pixels: overlaps, greedy NMS in static shapes, anchors and
the box-delta coding of the two-stage detectors (mmdet's `AnchorGenerator` and
`DeltaXYWHBBoxCoder`, which the HRNetV2p detection checkpoints were trained with)."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Box deltas' log width/height ratio is clamped to |log(16 / 1000)| when decoding, as mmdet.
WH_RATIO_CLIP = 16 / 1000


def area(boxes: jnp.ndarray) -> jnp.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def iou_matrix(boxes: jnp.ndarray, others: jnp.ndarray) -> jnp.ndarray:
    """IoU of every box (A, 4) with every other (B, 4): (A, B); 0 where the union is empty."""
    top_left = jnp.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = jnp.minimum(boxes[:, None, 2:], others[None, :, 2:])
    intersection = jnp.prod(jnp.clip(bottom_right - top_left, 0), -1)
    union = area(boxes)[:, None] + area(others)[None, :] - intersection
    return jnp.where(union > 0, intersection / jnp.where(union > 0, union, 1.0), 0.0)


def class_wise_nms(boxes: jnp.ndarray, scores: jnp.ndarray, classes: jnp.ndarray,
                   iou_threshold: float, max_detections: int, block: int = 128
                   ) -> dict[str, jnp.ndarray]:
    """Greedy NMS per class of one image's candidates (K, ...), scores <= 0 meaning none; the
    first `max_detections` survivors in score order, in static shapes. Returns boxes (D, 4),
    scores (D,), classes (D,) and valid (D,) (0 for padding).

    Greedy NMS keeps a box unless a better kept box of its class overlaps it by more than the
    threshold: with the candidates sorted and `suppresses[j, i]` (j before i, same class, IoU
    above the threshold), keep = candidate and not any_j (keep_j and suppresses[j, i]). It is
    solved `block` boxes at a time, in order: a block's boxes are first suppressed by the boxes
    kept in earlier blocks (one masked reduction), then the rule within the block is iterated
    from "keep all" to its fixed point (unique, the matrix being strictly triangular; each
    pass settles at least the next box, and a handful usually settle all). So K / block
    sequential steps instead of one per box kept; memory K x K (callers keep K to a few
    thousand)."""
    count = scores.shape[0]
    order = jnp.argsort(-jnp.where(scores > 0, scores, 0.0))
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    padded = -(-count // block) * block
    pad = padded - count
    candidate = jnp.pad(scores > 0, (0, pad))
    earlier = jnp.arange(count)[:, None] < jnp.arange(count)[None, :]
    suppresses = (earlier & (classes[:, None] == classes[None, :])
                  & (iou_matrix(boxes, boxes) > iou_threshold))
    suppresses = jnp.pad(suppresses, ((0, pad), (0, pad)))

    def settle_block(index, keep):
        start = index * block
        columns = jax.lax.dynamic_slice(suppresses, (0, start), (padded, block))
        free = jax.lax.dynamic_slice(candidate, (start,), (block,)) & ~jnp.any(
            columns & keep[:, None], axis=0)  # keep holds earlier blocks' decisions only
        inner = jax.lax.dynamic_slice(suppresses, (start, start), (block, block))

        def settle(state):
            kept, _ = state
            new = free & ~jnp.any(inner & kept[:, None], axis=0)
            return new, jnp.any(new != kept)

        kept, _ = jax.lax.while_loop(lambda state: state[1], settle, (free, jnp.array(True)))
        return jax.lax.dynamic_update_slice(keep, kept, (start,))

    keep = jax.lax.fori_loop(0, padded // block, settle_block,
                             jnp.zeros(padded, bool))[:count]
    # The kept boxes first, in score order.
    rank = jnp.where(keep, jnp.arange(count), count + jnp.arange(count))
    first = jnp.argsort(rank)[:max_detections]
    valid = keep[first]
    if count < max_detections:  # fewer candidates than slots: padding
        first = jnp.pad(first, (0, max_detections - count))
        valid = jnp.pad(valid, (0, max_detections - count))
    return {"boxes": boxes[first] * valid[:, None], "scores": scores[first] * valid,
            "classes": jnp.where(valid, classes[first], -1), "valid": valid}


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


def encode_deltas(boxes: jnp.ndarray, targets: jnp.ndarray,
                  stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> jnp.ndarray:
    """The deltas (dx, dy, dw, dh) / stds that move `boxes` (..., 4) onto `targets` (..., 4):
    centre shifts in units of the box's size, log size ratios."""
    size, centre = boxes[..., 2:] - boxes[..., :2], (boxes[..., :2] + boxes[..., 2:]) / 2
    target_size = targets[..., 2:] - targets[..., :2]
    target_centre = (targets[..., :2] + targets[..., 2:]) / 2
    deltas = jnp.concatenate([(target_centre - centre) / size, jnp.log(target_size / size)], -1)
    return deltas / jnp.asarray(stds, deltas.dtype)


def decode_deltas(boxes: jnp.ndarray, deltas: jnp.ndarray,
                  stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                  image_shape: tuple[int, int] | jnp.ndarray | None = None) -> jnp.ndarray:
    """`boxes` moved by `deltas` (the inverse of encode_deltas), the log size ratios clamped to
    |log(16 / 1000)|, and clipped to the image (height, width) when given."""
    deltas = deltas * jnp.asarray(stds, deltas.dtype)
    limit = abs(math.log(WH_RATIO_CLIP))
    size, centre = boxes[..., 2:] - boxes[..., :2], (boxes[..., :2] + boxes[..., 2:]) / 2
    new_centre = centre + deltas[..., :2] * size
    new_size = size * jnp.exp(jnp.clip(deltas[..., 2:], -limit, limit))
    out = jnp.concatenate([new_centre - new_size / 2, new_centre + new_size / 2], -1)
    if image_shape is not None:
        height, width = image_shape[0], image_shape[1]
        upper = jnp.stack([width, height, width, height]).astype(out.dtype)
        out = jnp.clip(out, 0.0, upper)
    return out
