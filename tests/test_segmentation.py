"""The segmentation task's losses against PyTorch and the reference's OHEM."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from hrnet_jax.tasks.segmentation import ohem_cross_entropy, pixel_cross_entropy


def test_pixel_cross_entropy_matches_torch_with_ignore_weights_and_upsampling():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 4, 6, 5).astype(np.float32)  # 1/4 resolution
    labels = rng.randint(0, 5, (2, 16, 24))
    labels[rng.rand(2, 16, 24) < 0.2] = 255
    weights = [0.8, 1.0, 1.2, 0.9, 1.1]
    up = F.interpolate(torch.from_numpy(logits).permute(0, 3, 1, 2), size=(16, 24),
                       mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, torch.from_numpy(labels), weight=torch.tensor(weights),
                               ignore_index=255).item()
    ours = pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), weights)
    assert abs(float(ours) - expected) < 1e-5 * expected


def numpy_ohem(logits, labels, weights, threshold, min_kept):
    """The reference's OhemCrossEntropy on one device batch, in numpy (logits at label size)."""
    z = logits - logits.max(-1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    valid = labels != 255
    y = labels[valid]
    p_true = prob[valid][np.arange(len(y)), y]
    losses = -np.log(p_true) * np.asarray(weights)[y]
    order = np.argsort(p_true, kind="stable")
    p_sorted, losses = p_true[order], losses[order]
    cut = max(p_sorted[min(min_kept, len(p_sorted) - 1)], threshold)
    return losses[p_sorted < cut].mean()


def test_ohem_matches_the_reference_algorithm_per_device_batch():
    rng = np.random.RandomState(1)
    logits = (3 * rng.randn(4, 12, 10, 5)).astype(np.float32)  # at label size: no resampling
    labels = rng.randint(0, 5, (4, 12, 10))
    labels[rng.rand(4, 12, 10) < 0.2] = 255
    weights = [0.8, 1.0, 1.2, 0.9, 1.1]
    for threshold, min_kept in ((0.7, 50), (0.9, 10), (0.3, 400)):
        # Two "devices" of two images each: the loss is the mean of the two mined losses.
        expected = np.mean([numpy_ohem(logits[g:g + 2], labels[g:g + 2], weights, threshold, min_kept)
                            for g in (0, 2)])
        ours = ohem_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), weights, threshold,
                                  min_kept, groups=2)
        assert abs(float(ours) - expected) < 1e-5 * expected, (threshold, min_kept)
    # A threshold above any probability keeps every labelled pixel: the plain mean.
    everything = ohem_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), None, 1.5, 10)
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    valid = labels != 255
    plain = -log_p[valid][np.arange(valid.sum()), labels[valid]].mean()
    assert abs(float(everything) - plain) < 1e-5 * plain
