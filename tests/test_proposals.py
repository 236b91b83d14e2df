"""The RPN's proposals (hrnet_jax/detection/proposals.py) against mmdet's per-level NMS."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.detection import anchors as anchors_lib

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.parity


def coder_decode(anchors, deltas):
    from torchvision.models.detection._utils import BoxCoder

    return BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(torch.from_numpy(deltas),
                                                        torch.from_numpy(anchors)).numpy()


def test_proposals_are_mmdets_per_level_nms_of_the_best_anchors():
    """Per level the pre_nms best anchors, decoded and clipped, NMS 0.7 within each level
    (torchvision's batched_nms with the level as the class), the best `keep` overall."""
    from hrnet_jax.detection import proposals as proposals_lib

    rng = np.random.default_rng(9)
    shapes, strides, image = [(16, 24), (8, 12), (4, 6)], (4, 8, 16), (64, 96)
    anchors = [anchors_lib.grid_anchors(s, stride) for s, stride in zip(shapes, strides)]
    objectness = [rng.normal(size=len(a)).astype(np.float32) for a in anchors]
    deltas = [rng.normal(0, 0.3, (len(a), 4)).astype(np.float32) for a in anchors]
    found = jax.device_get(jax.jit(proposals_lib.propose, static_argnums=(3, 4, 5, 6))(
        objectness, deltas, anchors, image, 300, 200, 0.7))
    boxes, scores, levels = [], [], []
    for level, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
        top = np.argsort(-o, kind="stable")[:300]
        decoded = coder_decode(a[top], d[top])
        boxes.append(np.clip(decoded, 0, [96, 64, 96, 64]))
        scores.append(1 / (1 + np.exp(-o[top])))
        levels.append(np.full(len(top), level))
    boxes, scores, levels = (np.concatenate(x) for x in (boxes, scores, levels))
    # mmdet (>= 2.13) drops the boxes clipped to zero width or height before NMS.
    nonzero = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    assert not nonzero.all()  # some anchors at the border decode outside the image
    boxes, scores, levels = boxes[nonzero], scores[nonzero], levels[nonzero]
    kept = torchvision.ops.batched_nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores),
                                       torch.from_numpy(levels), 0.7).numpy()[:200]
    assert found["valid"].sum() == len(kept) == 200
    np.testing.assert_allclose(found["scores"], scores[kept], rtol=1e-6)
    np.testing.assert_allclose(found["boxes"], boxes[kept], rtol=1e-5, atol=1e-3)
