"""FCOS (Tian et al. 2019) in JAX with static shapes: targets, losses and decoding.

Training: every location of every pyramid level is matched against the image's ground-truth
boxes, padded to a fixed count with a mask, so that shapes never depend on the image:
- a location is a candidate for a box when it lies inside the box and, with centre sampling,
  within `radius` strides of the box centre (the region clipped to the box);
- the level must be responsible for the box: its largest regression distance falls in the
  level's size range;
- among candidates the box of smallest area wins; locations without one are background.
Regression targets are the distances (left, top, right, bottom) to the box sides; centerness is
sqrt(min(l, r) / max(l, r) x min(t, b) / max(t, b)).

Inference (`detect`): per level the top k (location, class) pairs whose class probability
passes a threshold, scored sqrt(probability x centerness); then greedy class-wise NMS over all
levels, run for the fixed number of detections kept, so the output has a static size.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.models.fcos_head import FCOS_STYLES, FCOSStyle
from hrnet_jax.tasks.boxes import class_wise_nms

STRIDES = (8, 16, 32, 64, 128)
SIZE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, float("inf")))
CENTRE_RADIUS = 1.5


def level_locations(shapes: Sequence[tuple[int, int]], strides: Sequence[int] = STRIDES
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Locations (L, 2) as (x, y) input-pixel centres of every level's cells (levels of
    `shapes` (h, w), in order), each location's level stride (L,) and level index (L,)."""
    points, strides_out, levels = [], [], []
    for level, ((h, w), stride) in enumerate(zip(shapes, strides)):
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], -1) * stride + stride // 2)
        strides_out.append(np.full(h * w, stride))
        levels.append(np.full(h * w, level))
    return (np.concatenate(points).astype(np.float32), np.concatenate(strides_out).astype(np.float32),
            np.concatenate(levels))


def assign_targets(locations: jnp.ndarray, strides: jnp.ndarray, levels: jnp.ndarray,
                   boxes: jnp.ndarray, labels: jnp.ndarray, box_mask: jnp.ndarray,
                   size_ranges: Sequence[tuple[float, float]] = SIZE_RANGES,
                   radius: float | None = CENTRE_RADIUS) -> dict[str, jnp.ndarray]:
    """One image's targets. boxes (M, 4) as x0, y0, x1, y1, labels (M,) in 0..C-1, box_mask
    (M,) 1 for real boxes. Returns class (L,) with -1 for background, regression (L, 4),
    centerness (L,) and the matched box index (L,)."""
    x, y = locations[:, 0:1], locations[:, 1:2]
    x0, y0, x1, y1 = (boxes[None, :, k] for k in range(4))
    distances = jnp.stack([x - x0, y - y0, x1 - x, y1 - y], -1)  # (L, M, 4)
    inside = distances.min(-1) > 0
    if radius is not None:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        reach = strides[:, None] * radius
        region = jnp.stack([x - jnp.maximum(cx - reach, x0), y - jnp.maximum(cy - reach, y0),
                            jnp.minimum(cx + reach, x1) - x, jnp.minimum(cy + reach, y1) - y], -1)
        inside = region.min(-1) > 0
    ranges = jnp.asarray(size_ranges, jnp.float32)[levels]  # (L, 2)
    largest = distances.max(-1)
    responsible = (largest >= ranges[:, 0:1]) & (largest <= ranges[:, 1:2])
    candidate = inside & responsible & (box_mask[None, :] > 0)
    areas = (x1 - x0) * (y1 - y0)
    areas = jnp.where(candidate, jnp.broadcast_to(areas, candidate.shape), jnp.inf)
    matched = jnp.argmin(areas, -1)
    positive = jnp.isfinite(jnp.min(areas, -1))
    regression = jnp.take_along_axis(distances, matched[:, None, None], 1)[:, 0]
    return {"class": jnp.where(positive, jnp.asarray(labels)[matched], -1), "regression": regression,
            "centerness": jnp.where(positive, centerness(regression), 0.0), "matched": matched}


def centerness(regression: jnp.ndarray) -> jnp.ndarray:
    left, top, right, bottom = (regression[..., k] for k in range(4))
    ratio = (jnp.minimum(left, right) / jnp.maximum(left, right)
             * jnp.minimum(top, bottom) / jnp.maximum(top, bottom))
    return jnp.sqrt(jnp.clip(ratio, 0.0, 1.0))


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


def level_shapes(outputs: dict[str, list[jnp.ndarray]]) -> list[tuple[int, int]]:
    return [tuple(x.shape[1:3]) for x in outputs["class_logits"]]


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


def detect(outputs: dict[str, list[jnp.ndarray]], strides: Sequence[int],
           score_threshold: float = 0.05, pre_nms_top_k: int = 1000, iou_threshold: float = 0.6,
           max_detections: int = 100, score: str = "sqrt") -> dict[str, jnp.ndarray]:
    """Head outputs of a batch -> per image `max_detections` boxes (N, D, 4) as x0, y0, x1, y1
    in input pixels, their scores, classes and valid flags.

    score "sqrt": per level the top k (location, class) pairs of sqrt(p x centerness) among
    those with p > threshold. score "product" (mmdet): per level the k locations of the best
    max-over-classes p x centerness, then their (location, class) pairs with p x centerness >
    threshold, the best k of them (mmdet keeps them all: the same unless more than k pairs of
    one level pass the threshold)."""
    shapes = level_shapes(outputs)
    boxes, scores, classes = [], [], []
    for level, (h, w) in enumerate(shapes):
        locations, _, _ = level_locations([(h, w)], [strides[level]])
        logits = outputs["class_logits"][level]
        n, num_classes = logits.shape[0], logits.shape[-1]
        probabilities = jax.nn.sigmoid(logits.reshape(n, h * w, num_classes))
        centre = jax.nn.sigmoid(outputs["centerness"][level].reshape(n, h * w))
        if score == "sqrt":
            pair_score = jnp.sqrt(probabilities * centre[..., None])
            pair_score = jnp.where(probabilities > score_threshold, pair_score, 0.0).reshape(n, -1)
            top, index = jax.lax.top_k(pair_score, min(pre_nms_top_k, pair_score.shape[1]))
            cell, cls = index // num_classes, index % num_classes
        else:
            product = probabilities * centre[..., None]
            _, best_cells = jax.lax.top_k(product.max(-1), min(pre_nms_top_k, h * w))
            pair_score = jnp.take_along_axis(product, best_cells[..., None], 1)  # (N, k, C)
            pair_score = jnp.where(pair_score > score_threshold, pair_score, 0.0).reshape(n, -1)
            top, index = jax.lax.top_k(pair_score, min(pre_nms_top_k, pair_score.shape[1]))
            cell = jnp.take_along_axis(best_cells, index // num_classes, 1)
            cls = index % num_classes
        distances = jnp.take_along_axis(outputs["boxes"][level].reshape(n, h * w, 4),
                                        cell[..., None], 1)
        points = jnp.asarray(locations)[cell]  # (N, k, 2)
        boxes.append(jnp.concatenate([points - distances[..., :2], points + distances[..., 2:]], -1))
        scores.append(top)
        classes.append(cls)
    nms = functools.partial(class_wise_nms, iou_threshold=iou_threshold,
                            max_detections=max_detections)
    return jax.vmap(nms)(jnp.concatenate(boxes, 1), jnp.concatenate(scores, 1),
                         jnp.concatenate(classes, 1))
