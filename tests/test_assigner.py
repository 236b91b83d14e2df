"""The max-IoU assigner (hrnet_jax/detection/assigner.py) against mmdet's rules written out."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.detection import anchors as anchors_lib
from hrnet_jax.detection import boxes as boxes_lib


def mmdet_assign(overlaps, pos_thr, neg_thr, min_pos, low_quality):
    """mmdet's MaxIoUAssigner.assign_wrt_overlaps, step by step (overlaps: gts x boxes)."""
    assigned = np.full(overlaps.shape[1], -1)
    best, best_truth = overlaps.max(0), overlaps.argmax(0)
    assigned[(best >= 0) & (best < neg_thr)] = 0
    positive = best >= pos_thr
    assigned[positive] = best_truth[positive] + 1
    if low_quality:
        truth_best = overlaps.max(1)
        for i in range(overlaps.shape[0]):
            if truth_best[i] >= min_pos:
                assigned[overlaps[i] == truth_best[i]] = i + 1
    return assigned


@pytest.mark.parametrize("thresholds", [(0.7, 0.3, 0.3, True), (0.5, 0.5, 0.5, False)])
def test_assignment_is_mmdets_max_iou_assigner(thresholds):
    """The RPN's (0.7 / 0.3, low-quality matches) and the R-CNN's (0.5 / 0.5) settings, on
    anchors and ground truths that overlap at every level, padded ground truths ignored."""
    from hrnet_jax.detection import assigner

    anchors = np.concatenate([anchors_lib.grid_anchors((24, 32), 4),
                              anchors_lib.grid_anchors((12, 16), 8)])
    rng = np.random.default_rng(8)
    corner = rng.uniform(0, 80, (6, 2))
    truth = np.concatenate([corner, corner + rng.uniform(28, 70, (6, 2))], 1).astype(np.float32)
    truth[3] = truth[1]  # two identical ground truths: the later wins the low-quality claims
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last is padding
    assigned = np.asarray(jax.jit(assigner.assign, static_argnums=(3, 4, 5, 6))(
        anchors, truth, mask, *thresholds))
    expected = mmdet_assign(np.asarray(boxes_lib.iou_matrix(truth[:5], anchors)), *thresholds)
    np.testing.assert_array_equal(assigned, expected)
    assert (assigned > 0).sum() >= 10 and (assigned == 0).sum() > 100
    assert (assigned == -1).any() == (thresholds[1] < thresholds[0])  # the band between
    if thresholds[3]:  # the duplicate ground truths: the later one's claims stand
        assert 4 in assigned and 2 not in assigned
