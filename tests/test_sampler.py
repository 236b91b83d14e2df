"""Sampling anchors and RoIs (hrnet_jax/detection/sampler.py): the quotas, the ground truth
added, the fixed slots, and a cascade stage's refined boxes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.detection import boxes as boxes_lib
from hrnet_jax.detection import coder, sampler
from hrnet_jax.detection.boxes import iou_matrix

from detection_references import random_boxes


def test_sampling_takes_the_quota_of_positives_and_fills_with_negatives():
    from hrnet_jax.detection import sampler

    assigned = np.zeros(3000, np.int32)
    assigned[:400] = -1
    assigned[400:460] = 3  # 60 positives: fewer than the quota of 128
    sample = jax.jit(sampler.sample, static_argnums=(2, 3))
    positive, negative = map(np.asarray, sample(assigned, jax.random.key(0), 256, 0.5))
    assert positive.sum() == 60 and negative.sum() == 196
    assert (assigned[positive] > 0).all() and (assigned[negative] == 0).all()
    assigned[460:1000] = 1  # 600 positives: the quota binds
    positive, negative = map(np.asarray, sample(assigned, jax.random.key(0), 256, 0.5))
    assert positive.sum() == 128 and negative.sum() == 128
    other, _ = map(np.asarray, sample(assigned, jax.random.key(1), 256, 0.5))
    assert (other != positive).any()  # another key, another subset
    # uniform: over many keys, every positive is picked about 128 / 600 of the time
    picks = sum(np.asarray(sample(assigned, jax.random.key(k), 256, 0.5)[0]) for k in range(200))
    assert abs(picks[400:1000].mean() / 200 - 128 / 600) < 0.01 and picks[400:1000].min() > 10


def test_roi_sampling_adds_the_ground_truth_and_fills_fixed_slots():
    from hrnet_jax.detection import sampler

    truth = np.array([[10, 10, 50, 40], [60, 20, 90, 80], [0, 0, 0, 0]], np.float32)
    labels, mask = np.array([2, 0, 0]), np.array([1, 1, 0], np.float32)
    rng = np.random.default_rng(12)
    jitter = rng.normal(0, 3, (40, 4)).astype(np.float32)
    proposals = np.concatenate([truth[rng.integers(0, 2, 40)] + jitter,
                                random_boxes(13, n=1, r=60)[0]]).astype(np.float32)
    valid = np.ones(len(proposals), np.float32)
    valid[-10:] = 0  # padding of the RPN's static output
    out = jax.device_get(jax.jit(sampler.sample_rois, static_argnums=(6, 7, 8, 9, 10))(
        proposals, valid, truth, labels, mask, jax.random.key(0), 3, (0.1, 0.1, 0.2, 0.2), 0.5,
        64, 0.25))
    positive, slot_valid = out["positive"], out["valid"]
    assert positive.sum() == 16 and slot_valid.sum() == 64  # the quota, then negatives
    assert positive[:16].all() and not positive[16:].any()  # positives first
    np.testing.assert_array_equal(out["labels"][positive], labels[out["matched"][positive]])
    assert (out["labels"][~positive] == 3).all()  # background = num_classes
    ious = np.asarray(boxes_lib.iou_matrix(out["rois"], truth[:2])).max(1)
    assert (ious[positive] >= 0.5).all() and (ious[slot_valid & ~positive] < 0.5).all()
    sampled = {tuple(np.round(b, 3)) for b in out["rois"][slot_valid]}
    assert not sampled & {tuple(np.round(b, 3)) for b in proposals[-10:]}  # padding never drawn
    assert (0.0, 0.0, 0.0, 0.0) not in sampled  # nor the padded ground truth
    # Few candidates: the slots beyond them are invalid, and the ground truths are positives.
    few = jax.device_get(sampler.sample_rois(proposals[:3], valid[:3], truth, labels, mask,
                                             jax.random.key(1), 3, (0.1, 0.1, 0.2, 0.2), 0.5,
                                             64, 0.25))
    assert few["valid"].sum() == 5 and few["positive"].sum() >= 2


def test_stage_sampling_marks_the_ground_truth_and_refinement_drops_it():
    """mmdet's refine_bboxes: every sampled RoI decoded with the stage's stds (class-agnostic,
    clipped to the image), the ground truth added as proposals dropped; the next stage assigns
    the refined boxes at its own IoU."""
    truth = np.array([[10, 10, 50, 40], [60, 20, 90, 80]], np.float32)
    labels, mask = np.array([1, 0]), np.ones(2, np.float32)
    rng = np.random.default_rng(3)
    proposals = (truth[rng.integers(0, 2, 30)] + rng.normal(0, 4, (30, 4))).astype(np.float32)
    stds = (0.05, 0.05, 0.1, 0.1)
    out = sampler.sample_rois(proposals, np.ones(30, np.float32), truth, labels, mask,
                              jax.random.key(0), 2, stds, iou=0.6, count=16)
    from_truth = np.asarray(out["from_truth"])
    rois = np.asarray(out["rois"])
    assert from_truth.sum() == 2  # both ground truths were sampled (IoU 1: positives)
    np.testing.assert_allclose(rois[from_truth], truth[np.asarray(out["matched"])[from_truth]])
    # The targets decode back to the matched truth with the stage's stds.
    positive = np.asarray(out["positive"])
    decoded = np.asarray(coder.decode_deltas(rois, out["deltas"], stds))
    np.testing.assert_allclose(decoded[positive], truth[np.asarray(out["matched"])[positive]],
                               atol=1e-3)
    ious = np.asarray(iou_matrix(jnp.asarray(rois), jnp.asarray(truth))).max(1)
    valid = np.asarray(out["valid"])
    assert (ious[positive] >= 0.6).all() and (ious[valid & ~positive] < 0.6).all()


def test_boxes_refined_to_nothing_give_finite_targets():
    """A cascade's later stage may receive boxes its predecessor refined to zero width (pushed
    out of the image and clipped): they are never positives and their targets stay finite
    (mmdet encodes the positives only), so the losses' gradients do too."""
    truth = np.array([[10, 10, 50, 40], [0, 0, 0, 0]], np.float32)  # one real, one padding
    proposals = np.array([[64, 5, 64, 30], [12, 11, 49, 41], [0, 0, 0, 0]], np.float32)
    out = sampler.sample_rois(proposals, np.array([1, 1, 0], np.float32), truth,
                              np.array([1, 0]), np.array([1, 0], np.float32), jax.random.key(0),
                              2, (0.05, 0.05, 0.1, 0.1), iou=0.6, count=8)
    assert np.isfinite(np.asarray(out["deltas"])).all()
    assert int(np.asarray(out["positive"]).sum()) == 2  # the truth and the close proposal
