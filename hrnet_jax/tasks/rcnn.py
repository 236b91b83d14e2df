"""The two-stage detectors' losses (Faster R-CNN, Ren et al. 2015, as mmdet's configs for
HRNetV2p run it), in static shapes, on the targets the detection layer (hrnet_jax.detection)
assigns and samples:

- `rpn_loss`: sigmoid cross-entropy on the sampled anchors' objectness and L1 on the positives'
  deltas, averaged over the sampled anchors (anchors assigned at 0.7 / 0.3 with low-quality
  matches, 256 sampled an image, half positive at most).
- `rcnn_loss`: a box head stage's softmax cross-entropy over its sampled RoIs' classes and L1
  on the positives' deltas (its class's, or the class-agnostic ones of a cascade stage), both
  averaged over the sampled RoIs.
- `mask_loss`: binary cross-entropy of each positive RoI's mask logits of its own class.
- `semantic_loss`: HTC's semantic branch, cross-entropy over COCO-stuff's classes.
The box losses are L1 (mmdet's Faster / Mask R-CNN configs) or smooth L1 (its cascades').
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hrnet_jax.detection.assigner import assign
from hrnet_jax.detection.coder import encode_deltas
from hrnet_jax.detection.sampler import sample


def smooth_l1(difference: jnp.ndarray, beta: float) -> jnp.ndarray:
    """mmdet's SmoothL1Loss per element: 0.5 x^2 / beta below beta, |x| - 0.5 beta above; L1
    when beta is 0."""
    magnitude = jnp.abs(difference)
    if beta <= 0:
        return magnitude
    return jnp.where(magnitude < beta, 0.5 * magnitude ** 2 / beta, magnitude - 0.5 * beta)


def rpn_loss(objectness: jnp.ndarray, deltas: jnp.ndarray, anchors: jnp.ndarray,
             truth: jnp.ndarray, truth_mask: jnp.ndarray, key: jax.Array, count: int = 256,
             positive_fraction: float = 0.5, beta: float = 0.0
             ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The RPN's loss over a batch: objectness (N, A) logits and deltas (N, A, 4) of all
    levels' anchors (A, 4); ground truth (N, M, 4) with truth_mask (N, M). Anchors assigned at
    0.7 / 0.3 with low-quality matches, `count` sampled an image."""
    def one_image(logits, image_deltas, image_truth, mask, image_key):
        assigned = assign(anchors, image_truth, mask, 0.7, 0.3, 0.3, True)
        positive, negative = sample(assigned, image_key, count, positive_fraction)
        target = encode_deltas(anchors, image_truth[jnp.maximum(assigned - 1, 0)])
        cross_entropy = jnp.logaddexp(0.0, logits) - logits * positive
        box = smooth_l1(image_deltas - jnp.where(positive[:, None], target, 0.0), beta).sum(-1)
        return (jnp.sum(cross_entropy * (positive | negative)), jnp.sum(box * positive),
                jnp.sum(positive | negative))

    keys = jax.random.split(key, objectness.shape[0])
    cls_sum, box_sum, sampled = jax.vmap(one_image)(objectness, deltas, truth, truth_mask, keys)
    sampled = jnp.maximum(sampled.sum(), 1)
    rpn_cls, rpn_box = cls_sum.sum() / sampled, box_sum.sum() / sampled
    return rpn_cls + rpn_box, {"loss_rpn_cls": rpn_cls, "loss_rpn_box": rpn_box}


def rcnn_loss(logits: jnp.ndarray, deltas: jnp.ndarray, targets: dict[str, jnp.ndarray],
              beta: float = 0.0) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Softmax cross-entropy over the sampled RoIs' classes (+ background) and L1 on the
    positives' deltas of their class (or the class-agnostic ones), smooth L1 with `beta` (0: L1),
    both averaged over the sampled RoIs. logits (..., K + 1),
    deltas (..., K, 4), targets from sample_rois (batched alike)."""
    valid = targets["valid"].astype(jnp.float32)
    count = jnp.maximum(valid.sum(), 1.0)
    log_p = jax.nn.log_softmax(logits)
    cross_entropy = -jnp.take_along_axis(log_p, targets["labels"][..., None], -1)[..., 0]
    if deltas.ndim == logits.ndim:  # class-agnostic (a cascade's stage): (..., 4)
        own = deltas
    else:
        num_classes = deltas.shape[-2]
        own = jnp.take_along_axis(
            deltas, jnp.minimum(targets["labels"], num_classes - 1)[..., None, None], -2)[..., 0, :]
    box = smooth_l1(own - targets["deltas"], beta).sum(-1) * targets["positive"]
    rcnn_cls, rcnn_box = jnp.sum(cross_entropy * valid) / count, jnp.sum(box) / count
    return rcnn_cls + rcnn_box, {"loss_rcnn_cls": rcnn_cls, "loss_rcnn_box": rcnn_box}


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


IGNORED_LABEL = 255  # COCO-stuff's unlabelled pixels, and the padding


def semantic_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """HTC's semantic branch: softmax cross-entropy of logits (N, H, W, K) against labels
    (N, H, W), averaged over the labelled pixels (255 ignored), as mmdet's FusedSemanticHead."""
    labelled = labels != IGNORED_LABEL
    log_p = jax.nn.log_softmax(logits)
    picked = jnp.take_along_axis(log_p, jnp.where(labelled, labels, 0)[..., None].astype(jnp.int32),
                                 -1)[..., 0]
    return -jnp.sum(picked * labelled) / jnp.maximum(labelled.sum(), 1)
