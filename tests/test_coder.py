"""The box-delta coder (hrnet_jax/detection/coder.py) against torchvision's."""

from __future__ import annotations

import numpy as np
import pytest

from hrnet_jax.detection import coder as coder_lib

from detection_references import random_boxes

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.parity


@pytest.mark.parametrize("stds", [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)])
def test_delta_coder_equals_torchvisions_and_round_trips(stds):
    """torchvision's BoxCoder with weights 1 / stds is mmdet's DeltaXYWHBBoxCoder (means 0)."""
    from torchvision.models.detection._utils import BoxCoder

    rng = np.random.default_rng(6)
    anchors = random_boxes(7)[0]
    anchors = anchors[(anchors[:, 2] > anchors[:, 0]) & (anchors[:, 3] > anchors[:, 1])]
    targets = anchors + rng.normal(0, 8, anchors.shape).astype(np.float32)
    targets[:, 2:] = np.maximum(targets[:, 2:], targets[:, :2] + 1)
    coder = BoxCoder(weights=tuple(1.0 / s for s in stds))
    deltas = np.asarray(coder_lib.encode_deltas(anchors, targets, stds))
    expected = coder.encode_single(torch.from_numpy(targets), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(deltas, expected, rtol=1e-4, atol=1e-4)
    decoded = np.asarray(coder_lib.decode_deltas(anchors, deltas, stds))
    np.testing.assert_allclose(decoded, targets, rtol=1e-5, atol=1e-3)  # round trip
    # Beyond the size clamp: mmdet clamps log ratios on both sides, torchvision above only.
    limit = abs(np.log(16 / 1000))
    wild = rng.normal(0, 3, deltas.shape).astype(np.float32)
    wild[:, 2:] = np.maximum(wild[:, 2:], -limit / np.asarray(stds[2:])).astype(np.float32)
    shrunk = np.asarray(coder_lib.decode_deltas(anchors[:1], np.array([[0, 0, -99, -99]],
                                                                      np.float32), stds))
    np.testing.assert_allclose(shrunk[0, 2:] - shrunk[0, :2],
                               (anchors[0, 2:] - anchors[0, :2]) * 16 / 1000, rtol=1e-4)
    expected = coder.decode_single(torch.from_numpy(wild), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(np.asarray(coder_lib.decode_deltas(anchors, wild, stds)),
                               expected, rtol=1e-5, atol=1e-2)
    clipped = np.asarray(coder_lib.decode_deltas(anchors, wild, stds, image_size=(50, 70)))
    assert clipped.min() >= 0 and clipped[:, [0, 2]].max() <= 70 and clipped[:, [1, 3]].max() <= 50
