"""Class-wise NMS (hrnet_jax/detection/nms.py) against torchvision's batched NMS and a textbook
greedy loop."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.detection import nms

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.parity


def test_class_wise_nms_keeps_what_torchvisions_batched_nms_keeps_in_its_order():
    rng = np.random.default_rng(5)
    corners = rng.uniform(0, 60, (400, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(4, 40, (400, 2))], 1).astype(np.float32)
    scores = rng.uniform(0.01, 1, 400).astype(np.float32)
    classes = rng.integers(0, 4, 400)
    for threshold in (0.5, 0.7):
        kept = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                           torch.from_numpy(classes), threshold).numpy()
        assert 50 < len(kept) < 400
        out = jax.jit(nms.class_wise_nms, static_argnums=(3, 4))(
            boxes, scores, classes, threshold, 400)
        assert int(np.asarray(out["valid"]).sum()) == len(kept)
        np.testing.assert_array_equal(np.asarray(out["boxes"])[:len(kept)], boxes[kept])
        np.testing.assert_array_equal(np.asarray(out["classes"])[:len(kept)], classes[kept])


def greedy_nms(boxes, scores, classes, threshold):
    """Textbook NMS per class: visit by falling score, drop boxes overlapping a kept one."""
    order, kept = np.argsort(-scores, kind="stable"), []
    for i in order:
        if scores[i] <= 0:
            break
        overlaps = [fcos_iou(boxes[i], boxes[j]) > threshold for j in kept if classes[j] == classes[i]]
        if not any(overlaps):
            kept.append(i)
    return kept


def fcos_iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_class_wise_nms_matches_a_textbook_greedy_nms():
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 20, (300, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 30, (300, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    scores[rng.uniform(size=300) < 0.2] = 0.0  # below the threshold: never kept
    classes = rng.integers(0, 3, 300)
    expected = greedy_nms(boxes, scores, classes, 0.5)
    assert 20 < len(expected) < 150  # many suppressed, many kept
    out = jax.jit(nms.class_wise_nms, static_argnums=(3, 4))(boxes, scores, classes, 0.5, 200)
    valid = np.asarray(out["valid"])
    assert valid.sum() == len(expected) and valid[:len(expected)].all()
    np.testing.assert_array_equal(np.asarray(out["scores"])[:len(expected)], scores[expected])
    np.testing.assert_array_equal(np.asarray(out["classes"])[:len(expected)], classes[expected])
    assert np.all(np.asarray(out["classes"])[len(expected):] == -1)
    # fewer slots than survivors: exactly NMS's first ones
    top = jax.jit(nms.class_wise_nms, static_argnums=(3, 4))(boxes, scores, classes, 0.5, 10)
    np.testing.assert_array_equal(np.asarray(top["scores"]), scores[expected[:10]])
