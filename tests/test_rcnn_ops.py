"""The two-stage detectors' primitives against torchvision: RoIAlign over a pyramid."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.models import roi_align

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity

STRIDES = (4, 8, 16, 32)


def pyramid(seed=0, n=2, size=(96, 128), channels=6):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, size[0] // s, size[1] // s, channels)).astype(np.float32)
            for s in STRIDES]


def random_boxes(seed=1, n=2, r=40, size=(96, 128)):
    """Boxes of every scale (all four levels), some elongated, some crossing the border, one of
    zero width (an inverted box makes torchvision's adaptive grid negative: it fails)."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(np.log(4), np.log(700), (n, r, 1)))
    aspect = np.exp(rng.uniform(-1.5, 1.5, (n, r, 1)))
    side = np.concatenate([scale * np.sqrt(aspect), scale / np.sqrt(aspect)], -1)
    centre = rng.uniform(-10, [size[1] + 10, size[0] + 10], (n, r, 2))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], -1)
    boxes[:, 0, 2] = boxes[:, 0, 0]            # zero width
    return boxes.astype(np.float32)


def torchvision_pooled(features, boxes, levels, output_size, sampling_ratio):
    """Each box pooled by torchvision at its level's map and scale, as (N, R, P, P, C)."""
    n, r = boxes.shape[:2]
    out = np.zeros((n, r, output_size, output_size, features[0].shape[-1]), np.float32)
    for i in range(n):
        for j in range(r):
            level = int(levels[i, j])
            feature = torch.from_numpy(features[level][i:i + 1]).permute(0, 3, 1, 2)
            box = torch.from_numpy(np.concatenate([[0.0], boxes[i, j]])[None].astype(np.float32))
            pooled = torchvision.ops.roi_align(feature, box, output_size, 1.0 / STRIDES[level],
                                               sampling_ratio, aligned=True)
            out[i, j] = pooled[0].permute(1, 2, 0).numpy()
    return out


@pytest.mark.parametrize("sampling_ratio,output_size", [(2, 7), (0, 7), (0, 14)])
def test_roi_align_equals_torchvision_at_every_level(sampling_ratio, output_size):
    features, boxes = pyramid(), random_boxes()
    levels = np.asarray(roi_align.map_levels(boxes, len(STRIDES)))
    assert set(levels.ravel()) == {0, 1, 2, 3}  # every level is exercised
    # max_samples covers the largest adaptive grid of these boxes (10 a side): exact.
    ours = jax.jit(lambda f, b: roi_align.roi_align(f, STRIDES, b, output_size, sampling_ratio,
                                                    max_samples=10))(features, boxes)
    expected = torchvision_pooled(features, boxes, levels, output_size, sampling_ratio)
    assert np.abs(np.asarray(ours) - expected).max() <= 1e-4


def test_adaptive_sampling_beyond_its_cap_takes_the_cap_per_side():
    """A RoI wider than output_size x max_samples feature pixels is sampled max_samples times a
    side: torchvision's result with sampling_ratio = max_samples."""
    features = pyramid(size=(128, 256))
    boxes = np.array([[[4.0, 8.0, 250.0, 120.0]]], np.float32).repeat(2, 0)  # 61 px at stride 4
    levels = np.zeros((2, 1), np.int32)
    ours = roi_align.roi_align(features, STRIDES, boxes, 7, 0, max_samples=4, levels=levels)
    expected = torchvision_pooled(features, boxes, levels, 7, 4)
    assert np.abs(np.asarray(ours) - expected).max() <= 1e-4
    wider = torchvision_pooled(features, boxes, levels, 7, 0)
    assert np.abs(wider - expected).max() > 1e-3  # the cap does change such a RoI


def test_level_mapping_is_mmdets():
    """floor(log2(sqrt(area) / 56 + 1e-6)) clamped to 0..3: 112 and 224 start levels 1 and 2."""
    sides = np.array([10, 111.9, 112, 223.9, 224, 447.9, 448, 2000], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], -1)
    assert roi_align.map_levels(boxes, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
