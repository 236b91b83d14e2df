"""The RPN's proposals (mmdet's RPNHead.predict_by_feat): per level the `pre_nms` best anchors by
objectness, their boxes decoded and clipped to the image's own size, those of zero width or
height dropped (mmdet >= 2.13), NMS at 0.7 per level, then the `keep` best overall."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from hrnet_jax.detection.coder import decode_deltas
from hrnet_jax.detection.nms import class_wise_nms


def propose(objectness: Sequence[jnp.ndarray], deltas: Sequence[jnp.ndarray],
            anchors: Sequence[jnp.ndarray], image_size: jnp.ndarray | tuple[int, int],
            pre_nms: int, keep: int, iou_threshold: float = 0.7) -> dict[str, jnp.ndarray]:
    """One image's proposals. Per level: objectness logits (A_l,), deltas (A_l, 4), anchors
    (A_l, 4); image_size (height, width) of the image inside the canvas. Returns boxes
    (keep, 4), scores (keep,) (sigmoid objectness) and valid (keep,)."""
    boxes, scores = [], []
    for logits, level_deltas, level_anchors in zip(objectness, deltas, anchors):
        top, index = jax.lax.top_k(jax.nn.sigmoid(logits), min(pre_nms, logits.shape[0]))
        decoded = decode_deltas(jnp.asarray(level_anchors)[index], level_deltas[index],
                                image_size=image_size)
        width, height = decoded[:, 2] - decoded[:, 0], decoded[:, 3] - decoded[:, 1]
        top = jnp.where((width > 0) & (height > 0), top, 0.0)  # NMS drops a score of 0
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
