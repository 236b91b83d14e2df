"""Heatmap targets, loss and decoding (hrnet_jax.tasks.heatmaps), shared by every heatmap task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.data.datasets.coco import KEYPOINTS as COCO
from hrnet_jax.tasks import heatmaps
from hrnet_jax.tasks.heatmaps import decode_quarter_offset, gaussian_heatmaps, heatmap_mse


def test_gaussian_targets_follow_the_reference_rule():
    joints = np.array([[10.0, 21.0], [200.0, 5.0], [30.0, 30.0]], np.float32)
    maps, weights = gaussian_heatmaps(joints[None], np.array([[1, 1, 0]]), (16, 12), sigma=2)
    maps, weights = np.asarray(maps[0]), np.asarray(weights[0])
    np.testing.assert_array_equal(weights, [1, 0, 0])  # off the heatmap; unlabelled
    # centre int(x / 4 + 0.5): (3, 5); unnormalised peak 1; zero beyond 3 sigma.
    assert maps[5, 3, 0] == 1.0 and np.unravel_index(maps[..., 0].argmax(), (16, 12)) == (5, 3)
    assert abs(maps[5, 4, 0] - np.exp(-1 / 8)) < 1e-6
    assert maps[5, 10, 0] == 0.0 and maps[..., 1:].max() == 0.0


def full_grid_heatmaps(joints, visible, heatmap_size, sigma, stride=4):
    """The targets as the pipeline made them before it evaluated each Gaussian in its window
    only: every joint's exp over the whole grid, masked to 3 sigma."""
    h, w = heatmap_size
    radius = sigma * 3
    centres = (joints / stride + 0.5).astype(np.int64)
    lower, upper = (centres - radius).astype(np.int64), (centres + radius + 1).astype(np.int64)
    inside = (lower[:, 0] < w) & (lower[:, 1] < h) & (upper[:, 0] >= 0) & (upper[:, 1] >= 0)
    weights = (np.asarray(visible) > 0) & inside
    xs, ys = np.arange(w)[None, :], np.arange(h)[:, None]
    maps = np.zeros((h, w, len(joints)), np.float32)
    for k in np.flatnonzero(weights):
        dx, dy = xs - centres[k, 0], ys - centres[k, 1]
        window = (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
        maps[..., k] = np.where(window, np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)), 0.0)
    return maps, weights.astype(np.float32)


@pytest.mark.parametrize("sigma", [2, 3, 1.5, 2.5])
def test_targets_on_the_device_are_the_full_grid_ones(sigma):
    """The batch's targets made in the loss, each Gaussian read from its window's table: the
    same float32 targets and weights as the reference's exp over the whole grid, for 300
    persons with joints inside, on the edges and off the heatmap."""
    rng = np.random.default_rng(int(sigma * 10))
    joints = rng.uniform(-60, 300, (300, 17, 2)).astype(np.float32)
    visible = rng.integers(0, 2, (300, 17))
    maps, weights = jax.jit(gaussian_heatmaps, static_argnums=(2, 3))(joints, visible, (64, 48),
                                                                    sigma)
    for person in range(300):
        expected_maps, expected_weights = full_grid_heatmaps(joints[person], visible[person],
                                                             (64, 48), sigma)
        np.testing.assert_array_equal(maps[person], expected_maps)
        np.testing.assert_array_equal(weights[person], expected_weights)


def test_heatmap_mse_is_the_reference_joints_mse():
    rng = np.random.RandomState(1)
    pred, target = rng.rand(2, 8, 6, 3).astype(np.float32), rng.rand(2, 8, 6, 3).astype(np.float32)
    weight = np.array([[1, 0, 1], [1, 1, 0]], np.float32)
    expected = np.mean([0.5 * np.mean((pred[..., k] * weight[:, k, None, None]
                                       - target[..., k] * weight[:, k, None, None]) ** 2)
                        for k in range(3)])
    assert abs(float(heatmap_mse(pred, target, weight)) - expected) < 1e-7


def test_decoding_moves_a_quarter_pixel_toward_the_higher_neighbour():
    heatmaps = np.zeros((1, 10, 10, 2), np.float32)
    heatmaps[0, 7, 5, 0], heatmaps[0, 7, 6, 0], heatmaps[0, 6, 5, 0] = 1.0, 0.5, 0.2
    heatmaps[0, 0, 9, 1] = 0.7  # on the border: no shift
    coords, scores = decode_quarter_offset(jnp.asarray(heatmaps))
    np.testing.assert_allclose(np.asarray(coords[0]), [[5.25, 6.75], [9.0, 0.0]])
    np.testing.assert_allclose(np.asarray(scores[0]), [1.0, 0.7])


def test_one_heatmap_decoder_on_the_host_and_in_jitted_code():
    """The synthetic demo decodes inside its jitted eval step, top-down evaluation on the host:
    both run the reference rule (offset only for 1 < x < w - 1, a map without a positive value
    decodes to 0) and agree on every joint of random maps."""
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(48, 6, 7, 17)).astype(np.float32)
    maps[:4] = -np.abs(maps[:4])  # no positive value: decoded to (0, 0)
    host, host_scores = decode_quarter_offset(maps)
    device, device_scores = jax.jit(decode_quarter_offset)(jnp.asarray(maps))
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, np.asarray(device))
    np.testing.assert_array_equal(host_scores, np.asarray(device_scores))
    np.testing.assert_array_equal(host[:4], 0.0)
    edge = np.zeros((1, 6, 7, 1), np.float32)
    edge[0, 3, 1, 0], edge[0, 3, 2, 0] = 1.0, 0.5  # x = 1: no offset by the reference rule
    np.testing.assert_array_equal(decode_quarter_offset(edge)[0][0, 0], [1.0, 3.0])


def gaussians(points: np.ndarray, size=(64, 48), sigma=2.0) -> np.ndarray:
    ys, xs = np.mgrid[0:size[0], 0:size[1]]
    return np.exp(-((xs[..., None] - points[:, 0]) ** 2 + (ys[..., None] - points[:, 1]) ** 2)
                  / (2 * sigma ** 2)).astype(np.float32)[None]


def test_quarter_offset_decoder_follows_the_reference():
    maps = np.zeros((1, 8, 8, 4), np.float32)
    maps[0, 4, 4, 0], maps[0, 4, 5, 0], maps[0, 5, 4, 0] = 1.0, 0.5, 0.2  # right and down
    maps[0, 1, 4, 1], maps[0, 1, 5, 1] = 1.0, 0.5  # y = 1: outside 1 < y, not moved
    maps[0, 6, 3, 2], maps[0, 6, 2, 2] = 1.0, 0.5  # left
    maps[..., 3] = -1.0  # no positive maximum: the reference's coordinates are 0
    coords, scores = heatmaps.decode_quarter_offset(maps)
    np.testing.assert_allclose(coords[0], [[4.25, 4.25], [4, 1], [2.75, 6], [0, 0]])
    np.testing.assert_allclose(scores[0], [1, 1, 1, -1])


def test_dark_recovers_sub_pixel_centres_the_quarter_offset_cannot():
    rng = np.random.default_rng(0)
    truth = np.stack([rng.uniform(5, 42, 17), rng.uniform(5, 58, 17)], -1)
    maps = gaussians(truth)
    dark, _ = heatmaps.decode_dark(maps, heatmaps.blur_kernel_size(2.0))
    quarter, _ = heatmaps.decode_quarter_offset(maps)
    assert np.abs(dark[0] - truth).max() < 0.01
    assert np.linalg.norm(quarter[0] - truth, axis=-1).mean() > 0.1


def test_flip_back_undoes_the_mirror_and_shifts_one_pixel():
    maps = np.random.default_rng(0).uniform(size=(2, 16, 12, 17)).astype(np.float32)
    of_mirrored_input = maps[:, :, ::-1][..., COCO.flip_permutation()]
    np.testing.assert_array_equal(heatmaps.flip_back(of_mirrored_input, COCO, shift=False), maps)
    shifted = heatmaps.flip_back(of_mirrored_input, COCO)
    np.testing.assert_array_equal(shifted[:, :, 1:], maps[:, :, :-1])
    np.testing.assert_array_equal(shifted[:, :, 0], maps[:, :, 0])
