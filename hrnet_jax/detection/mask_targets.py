"""Mask R-CNN's mask targets on the device: each RoI's binary mask, sampled from its ground
truth's box-relative mask."""

from __future__ import annotations

import jax.numpy as jnp


def mask_targets(rois: jnp.ndarray, truth: jnp.ndarray, box_masks: jnp.ndarray,
                 matched: jnp.ndarray, size: int = 28) -> jnp.ndarray:
    """Each RoI's size x size binary mask target: its matched ground truth's box-relative mask
    (box_masks (M, S, S), hrnet_jax.data.detection.box_relative_masks, of the x0, y0, x1, y1
    boxes `truth` (M, 4)) sampled bilinearly at the RoI's cell centres, zero outside the box,
    >= 0.5. (mmdet RoIAligns the full-size mask; this reads a resampled copy, so the two can
    differ along the outline.) rois (R, 4), matched (R,) -> (R, size, size) float32."""
    grid = box_masks.shape[-1]
    boxes = truth[matched]
    masks = box_masks[matched]
    cells = (jnp.arange(size) + 0.5) / size

    def weights(start, length, box_start, box_length):
        """(R, size, S): the bilinear weight of each grid line for each target line."""
        points = start[:, None] + cells[None] * length[:, None]
        position = (points - box_start[:, None]) / box_length[:, None] * grid - 0.5
        return jnp.maximum(0.0, 1.0 - jnp.abs(position[..., None] - jnp.arange(grid)))

    box_w = jnp.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
    box_h = jnp.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    across = weights(rois[:, 0], rois[:, 2] - rois[:, 0], boxes[:, 0], box_w)
    down = weights(rois[:, 1], rois[:, 3] - rois[:, 1], boxes[:, 1], box_h)
    sampled = jnp.einsum("ris,rst,rjt->rij", down, masks, across)
    return (sampled >= 0.5).astype(jnp.float32)
