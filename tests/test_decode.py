"""Detections from head outputs (hrnet_jax/detection/decode.py): the R-CNN's against
torchvision's post-processing, FCOS's from perfect outputs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.detection import points
from hrnet_jax.detection.decode import point_detections

from conftest import perfect_head_outputs
from test_fcos import BOXES, LABELS, MASK, ceil_shapes

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.parity


def test_rcnn_detections_equal_torchvisions_postprocessing():
    """torchvision's RoIHeads.postprocess_detections (softmax, class-specific boxes decoded with
    weights 10, 10, 5, 5 = 1 / RCNN_STDS, clipped, score > 0.05, batched NMS 0.5, 100 kept) on
    the same logits and deltas, its background class 0 moved last."""
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.models.detection.roi_heads import RoIHeads

    from hrnet_jax.detection import decode

    rng = np.random.default_rng(10)
    # Inside the image, so that no decoded box is clipped to nothing: torchvision drops boxes
    # under 0.01 pixels, mmdet (and we) keep them.
    centre, side = rng.uniform(30, [98, 66], (300, 2)), rng.uniform(8, 50, (300, 2))
    rois = np.concatenate([centre - side / 2, centre + side / 2], 1).astype(np.float32)
    classes = 4
    logits = rng.normal(0, 2, (len(rois), classes + 1)).astype(np.float32)
    deltas = rng.normal(0, 0.7, (len(rois), classes, 4)).astype(np.float32)
    valid = np.ones(len(rois), np.float32)
    found = jax.device_get(jax.jit(decode.box_detections, static_argnums=(4, 5))(
        logits, deltas, rois, valid, (96, 128), (0.1, 0.1, 0.2, 0.2)))
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 100)
    heads.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    torch_logits = np.concatenate([logits[:, -1:], logits[:, :-1]], 1)  # background first
    torch_deltas = np.concatenate([np.zeros((len(rois), 1, 4), np.float32), deltas], 1)
    boxes, scores, labels = heads.postprocess_detections(
        torch.from_numpy(torch_logits), torch.from_numpy(torch_deltas.reshape(len(rois), -1)),
        [torch.from_numpy(rois)], [(96, 128)])
    count = int(found["valid"].sum())
    assert count == len(scores[0]) > 20
    np.testing.assert_allclose(found["scores"][:count], scores[0].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(found["classes"][:count], labels[0].numpy() - 1)
    np.testing.assert_allclose(found["boxes"][:count], boxes[0].numpy(), rtol=1e-5, atol=1e-3)


def test_detect_turns_perfect_head_outputs_into_the_boxes():
    """Head outputs built from the assigned targets (probability 1 at positives, the target
    distances, centerness 1) decode to exactly the ground-truth boxes and classes."""
    boxes, labels = BOXES[:4], LABELS[:4]
    outputs = perfect_head_outputs(ceil_shapes(128, 160), points.STRIDES, boxes, labels, MASK[:4], 5)
    detected = jax.jit(point_detections, static_argnums=(1,))(outputs, points.STRIDES)
    valid = np.asarray(detected["valid"][0])
    assert valid.sum() == 4  # one box per object: the copies at other locations are suppressed
    found = sorted(zip(np.asarray(detected["classes"][0])[valid].tolist(),
                       np.asarray(detected["boxes"][0])[valid].round(3).tolist()))
    assert found == sorted(zip(labels.tolist(), boxes.tolist()))
    assert np.all(np.asarray(detected["scores"][0])[valid] > 0.99)
