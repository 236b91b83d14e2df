"""mmdet's MaxIoUAssigner in static shapes: each box takes its best ground truth when their IoU
reaches `positive_iou`, is background below `negative_iou`, ignored in between; with
`match_low_quality` every ground truth also claims the boxes it overlaps most (ties included,
the later ground truth winning, as the reference's loop) if that IoU reaches
`min_positive_iou`. The RPN assigns at 0.7 / 0.3 with low-quality matches; the R-CNN stages at
one IoU (0.5, and 0.6 / 0.7 for a cascade's later stages) without."""

from __future__ import annotations

import jax.numpy as jnp

from hrnet_jax.detection.boxes import iou_matrix

IGNORED, BACKGROUND = -1, 0


def assign(boxes: jnp.ndarray, truth: jnp.ndarray, truth_mask: jnp.ndarray, positive_iou: float,
           negative_iou: float, min_positive_iou: float, match_low_quality: bool,
           box_valid: jnp.ndarray | None = None) -> jnp.ndarray:
    """boxes (A, 4), ground truth (M, 4) with truth_mask (M,) -> (A,) int32: -1 ignored, 0
    background, k + 1 matched to ground truth k. Boxes with box_valid 0 (padding) are ignored."""
    overlaps = jnp.where(truth_mask[:, None] > 0, iou_matrix(truth, boxes), -1.0)  # (M, A)
    if box_valid is not None:
        overlaps = jnp.where(box_valid[None, :] > 0, overlaps, -1.0)
    best = overlaps.max(0)
    best_truth = overlaps.argmax(0)
    assigned = jnp.full(boxes.shape[:1], IGNORED, jnp.int32)
    assigned = jnp.where((best >= 0) & (best < negative_iou), BACKGROUND, assigned)
    assigned = jnp.where(best >= positive_iou, best_truth + 1, assigned)
    if match_low_quality:
        truth_best = overlaps.max(1, keepdims=True)  # (M, 1)
        claims = (overlaps == truth_best) & (truth_best >= min_positive_iou) & (truth_mask[:, None] > 0)
        index = jnp.arange(truth.shape[0])[:, None]
        last_claim = jnp.max(jnp.where(claims, index, -1), 0)  # the reference loops in order
        assigned = jnp.where(last_claim >= 0, last_claim + 1, assigned)
    return assigned
