"""RoIAlign over a pyramid (hrnet_jax/detection/roi_align.py) against torchvision's, the
level mapping against mmdet's, and the speed script."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.detection import roi_align

from detection_references import random_boxes

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.parity


STRIDES = (4, 8, 16, 32)


def pyramid(seed=0, n=2, size=(96, 128), channels=6):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, size[0] // s, size[1] // s, channels)).astype(np.float32)
            for s in STRIDES]


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


def inside_canvas(boxes, size=(512, 768)):
    """The boxes clipped to the canvas, as the detectors pool them (proposals and detections
    are clipped to the image, the ground truth lies in it); the zero-width one stays."""
    return np.clip(boxes, 0, [size[1], size[0]] * 2).astype(np.float32)


@pytest.mark.parametrize("sampling_ratio,output_size", [(2, 7), (0, 7), (0, 14)])
def test_roi_align_equals_torchvision_at_every_level(sampling_ratio, output_size):
    # A canvas large enough for every level once the boxes are clipped to it.
    features, boxes = pyramid(size=(512, 768)), inside_canvas(random_boxes(size=(512, 768)))
    levels = np.asarray(roi_align.map_levels(boxes, len(STRIDES)))
    assert set(levels.ravel()) == {0, 1, 2, 3}  # every level is exercised
    ours = jax.jit(lambda f, b: roi_align.roi_align(f, STRIDES, b, output_size,
                                                    sampling_ratio))(features, boxes)
    expected = torchvision_pooled(features, boxes, levels, output_size, sampling_ratio)
    assert np.abs(np.asarray(ours) - expected).max() <= 1e-4


def test_adaptive_sampling_is_exact_for_rois_that_need_large_grids():
    """RoIs the level mapping sends to the finest level although long and thin (a 10-pixel
    high box across the canvas: 61 feature pixels, 9 samples a bin side), boxes at the image
    edge, the largest square of each level, and a box over the whole canvas: torchvision's
    adaptive grid (sampling_ratio=0) exactly, however many samples a side it takes."""
    size = (128, 256)
    features = pyramid(size=size)
    boxes = np.array([[4.0, 8.0, 250.0, 18.0], [0.0, 0.0, 256.0, 6.0], [250.0, 0.0, 256.0, 128.0],
                      [0.0, 0.0, 111.0, 111.0], [30.0, 10.0, 250.0, 120.0],
                      [0.0, 0.0, 256.0, 128.0], [100.5, 60.25, 101.0, 61.0]], np.float32)
    boxes = np.stack([boxes, boxes[::-1]])
    levels = np.asarray(roi_align.map_levels(boxes, len(STRIDES)))
    assert levels[0, 0] == 0 and levels[0, 1] == 0  # long and thin, on the finest level
    grid = np.ceil((boxes[0, 0, 2] - boxes[0, 0, 0]) / 4 / 7)
    assert grid >= 9  # far past the old cap of 4 samples a side
    for output_size in (7, 14):
        ours = roi_align.roi_align(features, STRIDES, boxes, output_size, 0)
        expected = torchvision_pooled(features, boxes, levels, output_size, 0)
        assert np.abs(np.asarray(ours) - expected).max() <= 1e-4


def test_roi_align_window_bounds_what_the_level_mapping_allows():
    """The gathered window is the touched rectangle's bound: the whole map for the last level
    and for explicit levels; on the finer levels the mapping's area bound keeps it smaller than
    the finest map."""
    shapes = [(200, 336), (100, 168), (50, 84), (25, 42)]
    mapped = roi_align.window_size(shapes, STRIDES)
    assert 25 * 42 <= mapped < 200 * 336 // 20
    assert roi_align.window_size(shapes, STRIDES, mapped=False) == 200 * 336


def test_level_mapping_is_mmdets():
    """floor(log2(sqrt(area) / 56 + 1e-6)) clamped to 0..3: 112 and 224 start levels 1 and 2."""
    sides = np.array([10, 111.9, 112, 223.9, 224, 447.9, 448, 2000], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], -1)
    assert roi_align.map_levels(boxes, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_roi_align_speed_script_times_ours_against_torchvision(capsys):
    """scripts/roi_align_speed.py at tiny sizes: every case prints its JSON with our time and
    torchvision's, and the two poolings agree (both exact)."""
    import importlib.util
    import json
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "roi_align_speed.py"
    spec = importlib.util.spec_from_file_location("roi_align_speed", path)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    results = script.main(["--image", "128,192", "--channels", "4", "--repeats", "1"])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == results
    assert [(r["head"], r["phase"]) for r in results] == [
        ("box", "forward"), ("box", "forward_backward"), ("mask", "forward"),
        ("mask", "forward_backward")]
    for result in results:
        assert result["ours_ms"] > 0 and result["torchvision_forward_ms"] > 0
        assert result["max_difference"] < 1e-4
