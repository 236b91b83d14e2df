"""Boxes as x0, y0, x1, y1 in input pixels: areas, overlaps, and clipping to each image's own
size (the part of the padded canvas that holds the image, as mmdet clips)."""

from __future__ import annotations

import jax.numpy as jnp


def area(boxes: jnp.ndarray) -> jnp.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def iou_matrix(boxes: jnp.ndarray, others: jnp.ndarray) -> jnp.ndarray:
    """IoU of every box (A, 4) with every other (B, 4): (A, B); 0 where the union is empty."""
    top_left = jnp.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = jnp.minimum(boxes[:, None, 2:], others[None, :, 2:])
    intersection = jnp.prod(jnp.clip(bottom_right - top_left, 0), -1)
    union = area(boxes)[:, None] + area(others)[None, :] - intersection
    return jnp.where(union > 0, intersection / jnp.where(union > 0, union, 1.0), 0.0)


def clip_boxes(boxes: jnp.ndarray, image_size: jnp.ndarray | tuple[int, int]) -> jnp.ndarray:
    """Boxes (..., 4) clipped to an image of `image_size` (height, width), which may be traced
    (each image of a batch has its own)."""
    height, width = image_size[0], image_size[1]
    upper = jnp.stack([width, height, width, height]).astype(boxes.dtype)
    return jnp.clip(boxes, 0.0, upper)
