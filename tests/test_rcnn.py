"""The two-stage losses (hrnet_jax/tasks/rcnn.py) by known answers."""

from __future__ import annotations

import jax
import numpy as np

from hrnet_jax.detection import anchors as anchors_lib
from hrnet_jax.detection import coder as coder_lib


def test_losses_known_answers():
    """Zero logits: sigmoid / softmax cross-entropy log 2 / log(K + 1); deltas equal to their
    targets: no box loss, and one unit off on one coordinate of every positive: positives /
    sampled."""
    from hrnet_jax.detection import assigner, sampler
    from hrnet_jax.tasks import rcnn

    anchors = anchors_lib.grid_anchors((8, 8), 8)
    truth = np.array([[[8, 8, 60, 50], [0, 0, 0, 0]]], np.float32)
    mask = np.array([[1, 0]], np.float32)
    zeros = np.zeros((1, len(anchors)), np.float32)
    assigned = assigner.assign(anchors, truth[0], mask[0], 0.7, 0.3, 0.3, True)
    targets = np.asarray(coder_lib.encode_deltas(anchors, truth[0][np.maximum(assigned - 1, 0)]))
    deltas = np.where((np.asarray(assigned) > 0)[:, None], targets, 0.0)[None].astype(np.float32)
    loss, figures = rcnn.rpn_loss(zeros, deltas, anchors, truth, mask, jax.random.key(0))
    np.testing.assert_allclose(figures["loss_rpn_cls"], np.log(2), rtol=1e-6)
    assert abs(float(figures["loss_rpn_box"])) < 1e-5
    positive, negative = sampler.sample(assigned, jax.random.split(jax.random.key(0), 1)[0], 256, 0.5)
    off = deltas + np.array([1.0, 0, 0, 0], np.float32)
    _, figures = rcnn.rpn_loss(zeros, off, anchors, truth, mask, jax.random.key(0))
    expected = float(np.sum(positive)) / float(np.sum(positive | negative))
    np.testing.assert_allclose(figures["loss_rpn_box"], expected, rtol=1e-5)

    labels = np.array([1, 4, 4, 0])
    targets = {"labels": labels, "deltas": np.ones((4, 4), np.float32),
               "positive": labels < 4, "valid": np.array([True, True, True, False])}
    loss, figures = rcnn.rcnn_loss(np.zeros((4, 5), np.float32), np.ones((4, 4, 4), np.float32),
                                   targets)
    np.testing.assert_allclose(figures["loss_rcnn_cls"], np.log(5), rtol=1e-6)
    assert float(figures["loss_rcnn_box"]) == 0.0


def test_mask_loss_known_answers():
    from hrnet_jax.tasks import rcnn

    logits = np.zeros((3, 4, 4, 2), np.float32)
    targets = np.ones((3, 4, 4), np.float32)
    positive = np.array([True, True, False])
    np.testing.assert_allclose(rcnn.mask_loss(logits, targets, np.array([0, 1, 0]), positive),
                               np.log(2), rtol=1e-6)
    logits[0, ..., 0] = 20.0  # RoI 0 certain of its class's mask: only RoI 1 costs
    np.testing.assert_allclose(rcnn.mask_loss(logits, targets, np.array([0, 1, 0]), positive),
                               np.log(2) / 2, rtol=1e-4)
