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
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from hrnet_jax.tasks.boxes import class_wise_nms, decode_deltas, iou_matrix

IGNORED, BACKGROUND = -1, 0


def assign(boxes: jnp.ndarray, truth: jnp.ndarray, truth_mask: jnp.ndarray, positive_iou: float,
           negative_iou: float, min_positive_iou: float, match_low_quality: bool
           ) -> jnp.ndarray:
    """boxes (A, 4), ground truth (M, 4) with truth_mask (M,) -> (A,) int32: -1 ignored, 0
    background, k + 1 matched to ground truth k."""
    overlaps = jnp.where(truth_mask[:, None] > 0, iou_matrix(truth, boxes), -1.0)  # (M, A)
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
    boxes, scores, levels = [], [], []
    for level, (logits, level_deltas, level_anchors) in enumerate(zip(objectness, deltas, anchors)):
        top, index = jax.lax.top_k(jax.nn.sigmoid(logits), min(pre_nms, logits.shape[0]))
        boxes.append(decode_deltas(level_anchors[index], level_deltas[index],
                                   image_shape=image_shape))
        scores.append(top)
        levels.append(jnp.full(top.shape, level, jnp.int32))
    # NMS within each level (the level standing in for the class), as mmdet's RPN.
    found = class_wise_nms(jnp.concatenate(boxes), jnp.concatenate(scores),
                           jnp.concatenate(levels), iou_threshold, keep)
    return {"boxes": found["boxes"], "scores": found["scores"], "valid": found["valid"]}
