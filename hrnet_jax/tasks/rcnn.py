"""The two-stage detectors' training targets and proposals (Faster R-CNN, Ren et al. 2015, as
mmdet's configs for HRNetV2p run it), in static shapes: every array has a size fixed by the
config, with masks where the reference has a data-dependent count.

- `assign`: mmdet's MaxIoUAssigner. Each box takes its best ground truth when their IoU reaches
  `positive_iou`, is background below `negative_iou`, ignored in between; with
  `match_low_quality` every ground truth also claims the boxes it overlaps most (ties included,
  the later ground truth winning, as the reference's loop) if that IoU reaches `min_positive_iou`.
- `sample`: mmdet's RandomSampler as fixed-size top-k on random keys: at most
  `count x positive_fraction` positives, negatives fill the rest of `count`.
- `propose`: the RPN's proposals: per level the `pre_nms` best anchors by objectness, their
  decoded boxes clipped to the image, NMS per level, then the `keep` best overall.
- `rpn_loss`, `sample_rois` + `rcnn_loss`: the two stages' losses, as mmdet's 1x configs
  (sigmoid cross-entropy and L1 on the deltas for the RPN; softmax cross-entropy and L1 on the
  class's deltas for the R-CNN; both averaged over the sampled boxes).
- `detect`: the R-CNN's detections: every (RoI, class) scored by its softmax probability,
  boxes decoded per class and clipped, score > threshold, class-wise NMS, the best `keep`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from hrnet_jax.tasks.boxes import class_wise_nms, decode_deltas, encode_deltas, iou_matrix

IGNORED, BACKGROUND = -1, 0
RCNN_STDS = (0.1, 0.1, 0.2, 0.2)  # the R-CNN's delta normalisation (the RPN's is 1)


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


def sample(assigned: jnp.ndarray, key: jax.Array, count: int, positive_fraction: float
           ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Boolean masks (A,) of the sampled positives and negatives: a uniformly random subset of
    at most int(count x positive_fraction) positives, and of the negatives the rest of
    `count` (fewer when there are fewer)."""
    noise = jax.random.uniform(key, assigned.shape)
    quota = int(count * positive_fraction)
    rank_positive = _rank(jnp.where(assigned > 0, noise, -1.0))
    positive = (assigned > 0) & (rank_positive < quota)
    negative_quota = count - positive.sum()
    rank_negative = _rank(jnp.where(assigned == BACKGROUND, noise, -1.0))
    negative = (assigned == BACKGROUND) & (rank_negative < negative_quota)
    return positive, negative


def _rank(scores: jnp.ndarray) -> jnp.ndarray:
    """Each element's place in descending order (0 = largest)."""
    order = jnp.argsort(-scores)
    return jnp.zeros_like(order).at[order].set(jnp.arange(scores.shape[0]))


def propose(objectness: Sequence[jnp.ndarray], deltas: Sequence[jnp.ndarray],
            anchors: Sequence[jnp.ndarray], image_shape: tuple[int, int], pre_nms: int,
            keep: int, iou_threshold: float = 0.7) -> dict[str, jnp.ndarray]:
    """One image's proposals. Per level: objectness logits (A_l,), deltas (A_l, 4), anchors
    (A_l, 4). Returns boxes (keep, 4), scores (keep,) (sigmoid objectness) and valid (keep,)."""
    boxes, scores = [], []
    for logits, level_deltas, level_anchors in zip(objectness, deltas, anchors):
        top, index = jax.lax.top_k(jax.nn.sigmoid(logits), min(pre_nms, logits.shape[0]))
        decoded = decode_deltas(jnp.asarray(level_anchors)[index], level_deltas[index],
                                image_shape=image_shape)
        # NMS within each level, as mmdet's RPN (batched by level): a level at a time keeps the
        # overlap matrices at pre_nms^2.
        kept = class_wise_nms(decoded, top, jnp.zeros(top.shape, jnp.int32), iou_threshold,
                              min(keep, top.shape[0]))
        boxes.append(kept["boxes"])
        scores.append(jnp.where(kept["valid"], kept["scores"], -1.0))
    scores, boxes = jnp.concatenate(scores), jnp.concatenate(boxes)
    if scores.shape[0] < keep:  # fewer anchors than proposals kept: padding
        boxes = jnp.pad(boxes, ((0, keep - scores.shape[0]), (0, 0)))
        scores = jnp.pad(scores, (0, keep - scores.shape[0]), constant_values=-1.0)
    best, index = jax.lax.top_k(scores, keep)
    return {"boxes": boxes[index], "scores": jnp.maximum(best, 0.0), "valid": best >= 0}


def rpn_loss(objectness: jnp.ndarray, deltas: jnp.ndarray, anchors: jnp.ndarray,
             truth: jnp.ndarray, truth_mask: jnp.ndarray, key: jax.Array, count: int = 256,
             positive_fraction: float = 0.5) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The RPN's loss over a batch: objectness (N, A) logits and deltas (N, A, 4) of all
    levels' anchors (A, 4); ground truth (N, M, 4) with truth_mask (N, M). Anchors assigned at
    0.7 / 0.3 with low-quality matches, `count` sampled an image."""
    def one_image(logits, image_deltas, image_truth, mask, image_key):
        assigned = assign(anchors, image_truth, mask, 0.7, 0.3, 0.3, True)
        positive, negative = sample(assigned, image_key, count, positive_fraction)
        target = encode_deltas(anchors, image_truth[jnp.maximum(assigned - 1, 0)])
        cross_entropy = jnp.logaddexp(0.0, logits) - logits * positive
        box = jnp.abs(image_deltas - jnp.where(positive[:, None], target, 0.0)).sum(-1)
        return (jnp.sum(cross_entropy * (positive | negative)), jnp.sum(box * positive),
                jnp.sum(positive | negative))

    keys = jax.random.split(key, objectness.shape[0])
    cls_sum, box_sum, sampled = jax.vmap(one_image)(objectness, deltas, truth, truth_mask, keys)
    sampled = jnp.maximum(sampled.sum(), 1)
    rpn_cls, rpn_box = cls_sum.sum() / sampled, box_sum.sum() / sampled
    return rpn_cls + rpn_box, {"loss_rpn_cls": rpn_cls, "loss_rpn_box": rpn_box}


def sample_rois(proposals: jnp.ndarray, proposal_valid: jnp.ndarray, truth: jnp.ndarray,
                labels: jnp.ndarray, truth_mask: jnp.ndarray, key: jax.Array, num_classes: int,
                count: int = 512, positive_fraction: float = 0.25) -> dict[str, jnp.ndarray]:
    """One image's R-CNN training RoIs: the ground truth added to the proposals (first, as
    mmdet), assigned at 0.5, `count` sampled into fixed slots (positives first). Returns rois
    (count, 4), labels (count,) (num_classes = background), target deltas (count, 4)
    normalised by RCNN_STDS, matched ground truth (count,), positive and valid (count,)."""
    candidates = jnp.concatenate([truth, proposals])
    candidate_valid = jnp.concatenate([truth_mask, proposal_valid])
    short = count - candidates.shape[0]
    if short > 0:  # fewer candidates than slots: padding, never drawn
        candidates = jnp.pad(candidates, ((0, short), (0, 0)))
        candidate_valid = jnp.pad(candidate_valid, (0, short))
    assigned = assign(candidates, truth, truth_mask, 0.5, 0.5, 0.5, False, candidate_valid)
    positive, negative = sample(assigned, key, count, positive_fraction)
    noise = jax.random.uniform(jax.random.fold_in(key, 1), assigned.shape)
    priority = jnp.where(positive, 2.0 + noise, jnp.where(negative, 1.0 + noise, 0.0))
    rank, slots = jax.lax.top_k(priority, count)
    matched = jnp.maximum(assigned[slots] - 1, 0)
    slot_positive = positive[slots]
    rois = candidates[slots]
    return {"rois": rois, "labels": jnp.where(slot_positive, labels[matched], num_classes),
            "deltas": encode_deltas(rois, truth[matched], RCNN_STDS) * slot_positive[:, None],
            "matched": matched, "positive": slot_positive, "valid": rank > 0}


def rcnn_loss(logits: jnp.ndarray, deltas: jnp.ndarray, targets: dict[str, jnp.ndarray]
              ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Softmax cross-entropy over the sampled RoIs' classes (+ background) and L1 on the
    positives' deltas of their class, both averaged over the sampled RoIs. logits (..., K + 1),
    deltas (..., K, 4), targets from sample_rois (batched alike)."""
    valid = targets["valid"].astype(jnp.float32)
    count = jnp.maximum(valid.sum(), 1.0)
    log_p = jax.nn.log_softmax(logits)
    cross_entropy = -jnp.take_along_axis(log_p, targets["labels"][..., None], -1)[..., 0]
    num_classes = deltas.shape[-2]
    own = jnp.take_along_axis(deltas, jnp.minimum(targets["labels"], num_classes - 1)[..., None, None],
                              -2)[..., 0, :]
    box = jnp.abs(own - targets["deltas"]).sum(-1) * targets["positive"]
    rcnn_cls, rcnn_box = jnp.sum(cross_entropy * valid) / count, jnp.sum(box) / count
    return rcnn_cls + rcnn_box, {"loss_rcnn_cls": rcnn_cls, "loss_rcnn_box": rcnn_box}


def detect(logits: jnp.ndarray, deltas: jnp.ndarray, rois: jnp.ndarray, roi_valid: jnp.ndarray,
           image_shape: tuple[int, int], score_threshold: float = 0.05, iou_threshold: float = 0.5,
           keep: int = 100, pre_nms: int = 1000) -> dict[str, jnp.ndarray]:
    """One image's detections from its RoIs (R, 4) (roi_valid (R,)), logits (R, K + 1) and
    deltas (R, K, 4): the `pre_nms` best (RoI, class) pairs above the threshold (mmdet keeps them
    all: the same unless NMS removes all but fewer than `keep` of the best `pre_nms`), their
    class's box decoded and clipped, class-wise NMS. Returns boxes (keep, 4), scores, classes
    (0..K-1, -1 padding) and valid."""
    num_classes = deltas.shape[-2]
    probabilities = jax.nn.softmax(logits)[:, :num_classes] * roi_valid[:, None]
    scores = jnp.where(probabilities > score_threshold, probabilities, 0.0).reshape(-1)
    top, pair = jax.lax.top_k(scores, min(pre_nms, scores.shape[0]))
    roi, cls = pair // num_classes, pair % num_classes
    boxes = decode_deltas(rois[roi], deltas[roi, cls], RCNN_STDS, image_shape)
    return class_wise_nms(boxes, top, cls, iou_threshold, keep)


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


def mask_loss(logits: jnp.ndarray, targets: jnp.ndarray, labels: jnp.ndarray,
              positive: jnp.ndarray) -> jnp.ndarray:
    """Binary cross-entropy of each positive RoI's mask logits of its own class (logits
    (..., S, S, K), targets (..., S, S), labels (...,), positive (...,)), averaged over the
    positives' pixels, as mmdet's mask head."""
    own = jnp.take_along_axis(logits, jnp.clip(labels, 0, logits.shape[-1] - 1)[..., None, None,
                                                                                  None], -1)[..., 0]
    bce = jnp.logaddexp(0.0, own) - own * targets
    weight = positive.astype(jnp.float32)[..., None, None]
    return jnp.sum(bce * weight) / jnp.maximum(jnp.sum(weight) * own.shape[-1] * own.shape[-2], 1.0)
