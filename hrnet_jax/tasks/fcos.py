"""FCOS's losses (Tian et al. 2019) in JAX with static shapes, on the targets the point
assigner gives (hrnet_jax.detection.points): sigmoid focal loss per positive, the box loss
(GIoU or -log IoU) weighted by the centerness targets, centerness BCE per positive."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from hrnet_jax.detection.points import assign_targets, level_locations, level_shapes
from hrnet_jax.models.fcos_head import FCOS_STYLES, FCOSStyle

def sigmoid_focal_loss(logits: jnp.ndarray, classes: jnp.ndarray, alpha: float = 0.25,
                       gamma: float = 2.0) -> jnp.ndarray:
    """Summed focal loss of (..., C) logits against class indices (...,), -1 = background."""
    targets = jax.nn.one_hot(classes, logits.shape[-1])  # -1 -> all zeros
    probabilities = jax.nn.sigmoid(logits)
    cross_entropy = (jnp.logaddexp(0.0, logits) - logits * targets)  # BCE with logits
    p_t = probabilities * targets + (1 - probabilities) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return jnp.sum(alpha_t * (1 - p_t) ** gamma * cross_entropy)


def giou_loss(predicted: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """1 - GIoU per location of (..., 4) distances (l, t, r, b) from the same point."""
    pl, pt, pr, pb = (predicted[..., k] for k in range(4))
    tl, tt, tr, tb = (target[..., k] for k in range(4))
    predicted_area = (pl + pr) * (pt + pb)
    target_area = (tl + tr) * (tt + tb)
    intersection = (jnp.minimum(pl, tl) + jnp.minimum(pr, tr)) * (jnp.minimum(pt, tt) + jnp.minimum(pb, tb))
    union = predicted_area + target_area - intersection
    enclosing = (jnp.maximum(pl, tl) + jnp.maximum(pr, tr)) * (jnp.maximum(pt, tt) + jnp.maximum(pb, tb))
    iou = intersection / jnp.maximum(union, 1e-7)
    return 1 - (iou - (enclosing - union) / jnp.maximum(enclosing, 1e-7))


def iou_log_loss(predicted: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """-log IoU per location of (..., 4) distances from the same point (FCOS's paper, mmdet's
    IoULoss), the IoU floored at 1e-6."""
    pl, pt, pr, pb = (predicted[..., k] for k in range(4))
    tl, tt, tr, tb = (target[..., k] for k in range(4))
    intersection = (jnp.minimum(pl, tl) + jnp.minimum(pr, tr)) * (jnp.minimum(pt, tt) + jnp.minimum(pb, tb))
    union = (pl + pr) * (pt + pb) + (tl + tr) * (tt + tb) - intersection
    return -jnp.log(jnp.maximum(intersection / jnp.maximum(union, 1e-6), 1e-6))


BOX_LOSSES = {"giou": giou_loss, "iou": iou_log_loss}


def fcos_loss(class_logits: jnp.ndarray, regression: jnp.ndarray, centerness_logits: jnp.ndarray,
              targets: dict[str, jnp.ndarray], axis_name: str | None = None, box_loss: str = "giou"
              ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The three FCOS losses over a batch of (N, L, ...) predictions: focal classification per
    positive, the box loss (BOX_LOSSES) weighted by the centerness targets (normalised by their
    sum), centerness BCE
    per positive. Positive counts are summed over `axis_name` (the data-parallel devices) when
    given, so that every device divides by the global count."""
    positive = (targets["class"] >= 0).astype(jnp.float32)
    count = positive.sum()
    weight = targets["centerness"] * positive
    weight_sum = weight.sum()
    if axis_name is not None:
        count, weight_sum = jax.lax.psum(count, axis_name), jax.lax.psum(weight_sum, axis_name)
    count, weight_sum = jnp.maximum(count, 1.0), jnp.maximum(weight_sum, 1e-6)
    classification = sigmoid_focal_loss(class_logits, targets["class"]) / count
    safe_target = jnp.where(positive[..., None] > 0, targets["regression"], 1.0)
    box = jnp.sum(BOX_LOSSES[box_loss](regression, safe_target) * weight) / weight_sum
    bce = jnp.logaddexp(0.0, centerness_logits) - centerness_logits * targets["centerness"]
    centre = jnp.sum(bce * positive) / count
    total = classification + box + centre
    return total, {"loss_cls": classification, "loss_box": box, "loss_centerness": centre}


def flatten_levels(per_level: list[jnp.ndarray]) -> jnp.ndarray:
    """Per level (N, h, w, ...) -> (N, L, ...), levels in order, cells row-major."""
    return jnp.concatenate([x.reshape(x.shape[0], -1, *x.shape[3:]) for x in per_level], 1)


def batch_loss(outputs: dict[str, list[jnp.ndarray]], boxes: jnp.ndarray, labels: jnp.ndarray,
               box_mask: jnp.ndarray, strides: Sequence[int], style: FCOSStyle = FCOS_STYLES["improved"]
               ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The FCOS loss of a batch of head outputs against padded boxes (N, M, 4) x0, y0, x1, y1,
    labels (N, M) and box_mask (N, M). Targets are assigned on the device."""
    locations, location_strides, levels = level_locations(level_shapes(outputs), strides)
    assign = functools.partial(assign_targets, radius=style.centre_radius)
    targets = jax.vmap(assign, in_axes=(None, None, None, 0, 0, 0))(
        locations, location_strides, levels, boxes, labels, box_mask)
    return fcos_loss(flatten_levels(outputs["class_logits"]), flatten_levels(outputs["boxes"]),
                     flatten_levels(outputs["centerness"]), targets, box_loss=style.box_loss)
