"""Keypoint heatmaps (pose, landmarks): Gaussian targets, target-weighted MSE, argmax decoding.

The reference recipe: an unnormalised Gaussian centred at int(x / stride + 0.5) inside a
3-sigma window; a joint that is unlabelled or whose window misses the heatmap gets weight 0;
the loss is 0.5 * MSE of (prediction * weight, target * weight), averaged over joints; decoding
takes the argmax and moves it a quarter pixel toward the higher neighbour.
"""

from __future__ import annotations

from typing import Any

import cv2
import jax.numpy as jnp
import numpy as np

from hrnet_jax.tasks import Task, whole_image

STRIDE = 4  # heatmaps at 1/4 of the input


def gaussian_heatmaps(joints: np.ndarray, visible: np.ndarray, heatmap_size: tuple[int, int],
                      sigma: float, stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """joints (K, 2) in input pixels (x, y) -> heatmaps (h, w, K) float32 and weights (K,)."""
    h, w = heatmap_size
    radius = sigma * 3
    centres = (joints / stride + 0.5).astype(np.int64)  # (K, 2), as int(x / stride + 0.5)
    lower = (centres - radius).astype(np.int64)
    upper = (centres + radius + 1).astype(np.int64)
    inside = (lower[:, 0] < w) & (lower[:, 1] < h) & (upper[:, 0] >= 0) & (upper[:, 1] >= 0)
    weights = (np.asarray(visible) > 0) & inside
    xs, ys = np.arange(w)[None, :], np.arange(h)[:, None]
    maps = np.zeros((h, w, len(joints)), np.float32)
    for k in np.flatnonzero(weights):
        dx, dy = xs - centres[k, 0], ys - centres[k, 1]
        window = (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
        maps[..., k] = np.where(window, np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)), 0.0)
    return maps, weights.astype(np.float32)


def heatmap_mse(heatmaps: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """0.5 * mean over joints of MSE(pred * w, target * w): the reference JointsMSELoss."""
    w = weights[:, None, None, :]
    return 0.5 * jnp.mean((heatmaps.astype(jnp.float32) * w - targets * w) ** 2)


def decode_heatmaps(heatmaps: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(N, h, w, K) -> coordinates (N, K, 2) in heatmap pixels (x, y) and scores (N, K)."""
    n, h, w, k = heatmaps.shape
    flat = jnp.moveaxis(heatmaps.astype(jnp.float32), 3, 1).reshape(n, k, h * w)
    index = jnp.argmax(flat, -1)
    scores = jnp.max(flat, -1)
    x, y = index % w, index // w

    def at(dx, dy):
        return jnp.take_along_axis(flat, (jnp.clip(y + dy, 0, h - 1) * w
                                          + jnp.clip(x + dx, 0, w - 1))[..., None], -1)[..., 0]

    interior = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    shift = jnp.stack([jnp.sign(at(1, 0) - at(-1, 0)), jnp.sign(at(0, 1) - at(0, -1))], -1)
    coords = jnp.stack([x, y], -1).astype(jnp.float32) + 0.25 * shift * interior[..., None]
    return coords, scores


def draw_skeleton(image: np.ndarray, joints: np.ndarray, limbs, colour, visible=None) -> np.ndarray:
    """Limbs and joints drawn on a copy of the image; lines thicken with the image's size."""
    canvas = np.ascontiguousarray(image.copy())
    visible = np.ones(len(joints), bool) if visible is None else np.asarray(visible) > 0
    thickness = max(1, round(max(image.shape[:2]) / 320))
    for a, b in limbs:
        if visible[a] and visible[b]:
            cv2.line(canvas, tuple(int(v) for v in joints[a]), tuple(int(v) for v in joints[b]),
                     colour, thickness, cv2.LINE_AA)
    for joint, seen in zip(joints, visible):
        if seen:
            cv2.circle(canvas, (int(joint[0]), int(joint[1])), thickness + 1, colour, -1,
                       cv2.LINE_AA)
    return canvas


def make_task(config: Any, limbs=()) -> Task:
    """Top-down pose for the keypoint datasets (hrnet_jax.tasks.topdown); otherwise the
    synthetic stick figures, whole pictures in, PCK at 0.1 x the longer image side out."""
    from hrnet_jax.data.keypoint_sets import KEYPOINT_SETS
    if config.data.name in KEYPOINT_SETS:
        from hrnet_jax.tasks import topdown
        return topdown.make_task(config)
    height, width = config.data.image_size
    heatmap_size = (-(-height // STRIDE), -(-width // STRIDE))
    threshold = 0.1 * max(height, width)
    sigma = config.data.heatmap_sigma
    if not limbs:
        from hrnet_jax.data.synthetic import POSE_LIMBS
        limbs = POSE_LIMBS

    def prepare(example):
        maps, weights = gaussian_heatmaps(example["joints"], example["visible"], heatmap_size, sigma)
        return {**example, "heatmaps": maps, "target_weight": weights}

    def loss(heatmaps, batch):
        return heatmap_mse(heatmaps, batch["heatmaps"], batch["target_weight"]), {}

    def eval_sums(heatmaps, batch):
        coords, _ = decode_heatmaps(heatmaps)
        error = jnp.linalg.norm(coords * STRIDE - batch["joints"], axis=-1)
        counted = batch["visible"] * batch["mask"][:, None]
        return {"correct": jnp.sum((error < threshold) * counted), "joints": jnp.sum(counted),
                "error_px": jnp.sum(error * counted)}

    def summarize(sums):
        joints = max(float(sums["joints"]), 1.0)
        return {"pck": float(sums["correct"]) / joints, "mean_error_px": float(sums["error_px"]) / joints}

    def draw(predict, example):
        image = example["image"]
        coords, _ = decode_heatmaps(jnp.asarray(whole_image(predict, image)[None]))
        predicted = np.asarray(coords[0]) * STRIDE
        truth = draw_skeleton(image, example["joints"], limbs, (0, 255, 0), example["visible"])
        return np.concatenate([truth, draw_skeleton(image, predicted, limbs, (255, 0, 255))], axis=1)

    return Task("pose", "pose", "pck", prepare, loss, eval_sums, summarize, draw)
