"""Greedy class-wise non-maximum suppression in static shapes, on the device."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hrnet_jax.detection.boxes import iou_matrix


def class_wise_nms(boxes: jnp.ndarray, scores: jnp.ndarray, classes: jnp.ndarray,
                   iou_threshold: float, max_detections: int, block: int = 128
                   ) -> dict[str, jnp.ndarray]:
    """Greedy NMS per class of one image's candidates (K, ...), scores <= 0 meaning none; the
    first `max_detections` survivors in score order, in static shapes. Returns boxes (D, 4),
    scores (D,), classes (D,) and valid (D,) (0 for padding).

    Greedy NMS keeps a box unless a better kept box of its class overlaps it by more than the
    threshold: with the candidates sorted and `suppresses[j, i]` (j before i, same class, IoU
    above the threshold), keep = candidate and not any_j (keep_j and suppresses[j, i]). It is
    solved `block` boxes at a time, in order: a block's boxes are first suppressed by the boxes
    kept in earlier blocks (one masked reduction), then the rule within the block is iterated
    from "keep all" to its fixed point (unique, the matrix being strictly triangular; each
    pass settles at least the next box, and a handful usually settle all). So K / block
    sequential steps instead of one per box kept; memory K x K (callers keep K to a few
    thousand)."""
    count = scores.shape[0]
    order = jnp.argsort(-jnp.where(scores > 0, scores, 0.0))
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    padded = -(-count // block) * block
    pad = padded - count
    candidate = jnp.pad(scores > 0, (0, pad))
    earlier = jnp.arange(count)[:, None] < jnp.arange(count)[None, :]
    suppresses = (earlier & (classes[:, None] == classes[None, :])
                  & (iou_matrix(boxes, boxes) > iou_threshold))
    suppresses = jnp.pad(suppresses, ((0, pad), (0, pad)))

    def settle_block(index, keep):
        start = index * block
        columns = jax.lax.dynamic_slice(suppresses, (0, start), (padded, block))
        free = jax.lax.dynamic_slice(candidate, (start,), (block,)) & ~jnp.any(
            columns & keep[:, None], axis=0)  # keep holds earlier blocks' decisions only
        inner = jax.lax.dynamic_slice(suppresses, (start, start), (block, block))

        def settle(state):
            kept, _ = state
            new = free & ~jnp.any(inner & kept[:, None], axis=0)
            return new, jnp.any(new != kept)

        kept, _ = jax.lax.while_loop(lambda state: state[1], settle, (free, jnp.array(True)))
        return jax.lax.dynamic_update_slice(keep, kept, (start,))

    keep = jax.lax.fori_loop(0, padded // block, settle_block,
                             jnp.zeros(padded, bool))[:count]
    # The kept boxes first, in score order.
    rank = jnp.where(keep, jnp.arange(count), count + jnp.arange(count))
    first = jnp.argsort(rank)[:max_detections]
    valid = keep[first]
    if count < max_detections:  # fewer candidates than slots: padding
        first = jnp.pad(first, (0, max_detections - count))
        valid = jnp.pad(valid, (0, max_detections - count))
    return {"boxes": boxes[first] * valid[:, None], "scores": scores[first] * valid,
            "classes": jnp.where(valid, classes[first], -1), "valid": valid}
