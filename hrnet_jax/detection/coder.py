"""The box-delta coder of the two-stage detectors (mmdet's `DeltaXYWHBBoxCoder`): deltas
(dx, dy, dw, dh) normalised by per-coordinate stds (1 for the RPN, (0.1, 0.1, 0.2, 0.2) for
Faster R-CNN's box head, finer for each later stage of a cascade)."""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp

from hrnet_jax.detection.boxes import clip_boxes

# Box deltas' log width/height ratio is clamped to |log(16 / 1000)| when decoding, as mmdet.
WH_RATIO_CLIP = 16 / 1000


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
                  image_size: tuple[int, int] | jnp.ndarray | None = None) -> jnp.ndarray:
    """`boxes` moved by `deltas` (the inverse of encode_deltas), the log size ratios clamped to
    |log(16 / 1000)|, and clipped to the image (height, width) when given."""
    deltas = deltas * jnp.asarray(stds, deltas.dtype)
    limit = abs(math.log(WH_RATIO_CLIP))
    size, centre = boxes[..., 2:] - boxes[..., :2], (boxes[..., :2] + boxes[..., 2:]) / 2
    new_centre = centre + deltas[..., :2] * size
    new_size = size * jnp.exp(jnp.clip(deltas[..., 2:], -limit, limit))
    out = jnp.concatenate([new_centre - new_size / 2, new_centre + new_size / 2], -1)
    return out if image_size is None else clip_boxes(out, image_size)
