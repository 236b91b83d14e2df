"""Detection decoding in static shapes: the R-CNN's boxes from RoIs, class scores and deltas
(`box_detections`) and FCOS's from points (`point_detections`: `point_candidates`, then NMS),
each ending in class-wise NMS with a fixed number of detections an image."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from hrnet_jax.detection.coder import decode_deltas
from hrnet_jax.detection.nms import class_wise_nms
from hrnet_jax.detection.points import level_locations, level_shapes


def box_detections(logits: jnp.ndarray, deltas: jnp.ndarray, rois: jnp.ndarray,
                   roi_valid: jnp.ndarray, image_size: jnp.ndarray | tuple[int, int],
                   stds: Sequence[float], score_threshold: float = 0.05,
                   iou_threshold: float = 0.5, keep: int = 100, pre_nms: int = 1000
                   ) -> dict[str, jnp.ndarray]:
    """One image's detections from its RoIs (R, 4) (roi_valid (R,)), class logits (R, K + 1)
    and deltas, class-specific (R, K, 4) or class-agnostic (R, 4) as a cascade's: the `pre_nms`
    best (RoI, class) pairs of softmax probability above the threshold (mmdet keeps them all:
    the same unless NMS removes all but fewer than `keep` of the best `pre_nms`), their box
    decoded with `stds` and clipped to the image's own size (height, width), class-wise NMS.
    Returns boxes (keep, 4), scores, classes (0..K-1, -1 padding) and valid."""
    num_classes = logits.shape[-1] - 1
    probabilities = jax.nn.softmax(logits)[:, :num_classes] * roi_valid[:, None]
    scores = jnp.where(probabilities > score_threshold, probabilities, 0.0).reshape(-1)
    top, pair = jax.lax.top_k(scores, min(pre_nms, scores.shape[0]))
    roi, cls = pair // num_classes, pair % num_classes
    own = deltas[roi] if deltas.ndim == 2 else deltas[roi, cls]
    boxes = decode_deltas(rois[roi], own, stds, image_size)
    return class_wise_nms(boxes, top, cls, iou_threshold, keep)


def point_candidates(outputs: dict[str, list[jnp.ndarray]], strides: Sequence[int],
                     score_threshold: float = 0.05, pre_nms_top_k: int = 1000,
                     score: str = "sqrt") -> dict[str, jnp.ndarray]:
    """FCOS's head outputs of a batch -> the candidates of NMS: boxes (N, K, 4) as x0, y0, x1, y1
    in input pixels, their scores (N, K) (0: none) and classes (N, K), K the levels' top k
    together.

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
            cell, cls = _divmod(index, num_classes)
        else:
            product = probabilities * centre[..., None]
            _, best_cells = jax.lax.top_k(product.max(-1), min(pre_nms_top_k, h * w))
            pair_score = jnp.take_along_axis(product, best_cells[..., None], 1)  # (N, k, C)
            pair_score = jnp.where(pair_score > score_threshold, pair_score, 0.0).reshape(n, -1)
            top, index = jax.lax.top_k(pair_score, min(pre_nms_top_k, pair_score.shape[1]))
            best, cls = _divmod(index, num_classes)
            cell = jnp.take_along_axis(best_cells, best, 1)
        distances = jnp.take_along_axis(outputs["boxes"][level].reshape(n, h * w, 4),
                                        cell[..., None], 1)
        points = jnp.asarray(locations)[cell]  # (N, k, 2)
        boxes.append(jnp.concatenate([points - distances[..., :2], points + distances[..., 2:]], -1))
        scores.append(top)
        classes.append(cls)
    return {"boxes": jnp.concatenate(boxes, 1), "scores": jnp.concatenate(scores, 1),
            "classes": jnp.concatenate(classes, 1)}


def _divmod(index: jnp.ndarray, divisor: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Quotient and remainder of non-negative indices. lax.div (truncating: the floor here)
    rather than `//` and `%`, whose sign corrections the ONNX converter cannot shape for a
    symbolic batch (`export --format=onnx` converts these candidates)."""
    quotient = jax.lax.div(index, jnp.asarray(divisor, index.dtype))
    return quotient, index - quotient * divisor


def point_detections(outputs: dict[str, list[jnp.ndarray]], strides: Sequence[int],
                     score_threshold: float = 0.05, pre_nms_top_k: int = 1000, iou_threshold: float = 0.6,
                     max_detections: int = 100, score: str = "sqrt") -> dict[str, jnp.ndarray]:
    """FCOS's head outputs of a batch -> per image `max_detections` boxes (N, D, 4) as x0, y0,
    x1, y1 in input pixels, their scores, classes and valid flags: `point_candidates`, then
    class-wise NMS."""
    candidates = point_candidates(outputs, strides, score_threshold, pre_nms_top_k, score)
    nms = functools.partial(class_wise_nms, iou_threshold=iou_threshold,
                            max_detections=max_detections)
    return jax.vmap(nms)(candidates["boxes"], candidates["scores"], candidates["classes"])
