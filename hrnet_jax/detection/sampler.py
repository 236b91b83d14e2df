"""mmdet's RandomSampler as fixed-size top-k on random keys, and the R-CNN stages' RoI sampling
built on it (ground truth added to the proposals, assigned, sampled into fixed slots).

The slots' order is the one fact the heads rely on: the sampled positives fill the first
slots, so a mask head runs on the first `positive_slots(count, fraction)` RoIs only."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from hrnet_jax.detection.assigner import BACKGROUND, assign
from hrnet_jax.detection.coder import encode_deltas


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


def positive_slots(count: int, positive_fraction: float) -> int:
    """How many of `sample_rois`' first slots can hold positives (the rest never do)."""
    return int(count * positive_fraction)


def sample_rois(proposals: jnp.ndarray, proposal_valid: jnp.ndarray, truth: jnp.ndarray,
                labels: jnp.ndarray, truth_mask: jnp.ndarray, key: jax.Array, num_classes: int,
                stds: Sequence[float], iou: float = 0.5, count: int = 512,
                positive_fraction: float = 0.25) -> dict[str, jnp.ndarray]:
    """One image's training RoIs for an R-CNN stage: the ground truth added to the proposals
    (first, as mmdet), assigned at `iou` (positive at or above, background below, no
    low-quality matches), `count` sampled into fixed slots, positives first. Returns rois
    (count, 4), labels (count,) (num_classes = background), target deltas (count, 4)
    normalised by `stds`, matched ground truth (count,), positive, valid, and from_truth
    (count,): the slot holds a ground-truth box (a cascade drops those when it refines)."""
    candidates = jnp.concatenate([truth, proposals])
    candidate_valid = jnp.concatenate([truth_mask, proposal_valid])
    short = count - candidates.shape[0]
    if short > 0:  # fewer candidates than slots: padding, never drawn
        candidates = jnp.pad(candidates, ((0, short), (0, 0)))
        candidate_valid = jnp.pad(candidate_valid, (0, short))
    assigned = assign(candidates, truth, truth_mask, iou, iou, iou, False, candidate_valid)
    positive, negative = sample(assigned, key, count, positive_fraction)
    noise = jax.random.uniform(jax.random.fold_in(key, 1), assigned.shape)
    priority = jnp.where(positive, 2.0 + noise, jnp.where(negative, 1.0 + noise, 0.0))
    rank, slots = jax.lax.top_k(priority, count)
    matched = jnp.maximum(assigned[slots] - 1, 0)
    slot_positive = positive[slots]
    rois = candidates[slots]
    # Targets of the positives only: a negative may be a box refined to nothing (a cascade's),
    # whose deltas would be infinite (and 0 x inf is not 0).
    encodable = jnp.where(slot_positive[:, None], rois, truth[matched])
    deltas = jnp.where(slot_positive[:, None], encode_deltas(encodable, truth[matched], stds), 0.0)
    return {"rois": rois, "labels": jnp.where(slot_positive, labels[matched], num_classes),
            "deltas": deltas,
            "matched": matched, "positive": slot_positive, "valid": rank > 0,
            "from_truth": (slots < truth.shape[0]) & (rank > 0)}
