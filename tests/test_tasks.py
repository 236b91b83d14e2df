"""Known answers for the tasks' losses and metrics, against PyTorch or by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from hrnet_jax.evaluation.topk import top_k_correct
from hrnet_jax.tasks.classification import cross_entropy
from hrnet_jax.evaluation.miou import confusion_matrix, iou_summary
from hrnet_jax.tasks.heatmaps import decode_quarter_offset, gaussian_heatmaps, heatmap_mse
from hrnet_jax.tasks.segmentation import (ohem_cross_entropy,
                                          pixel_cross_entropy)



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


def test_confusion_matrix_and_iou_by_hand():
    labels = jnp.array([[0, 0, 1, 1, 2, 255]])
    predictions = jnp.array([[0, 1, 1, 1, 0, 2]])
    confusion = np.asarray(confusion_matrix(predictions, labels, 3, jnp.ones((1, 6))))
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    summary = iou_summary(confusion)
    # IoU: class 0 = 1 / (2 + 2 - 1), class 1 = 2 / (2 + 3 - 2), class 2 = 0 / (1 + 0 - 0).
    assert abs(summary["miou"] - (1 / 3 + 2 / 3 + 0) / 3) < 1e-12
    assert abs(summary["miou_all_classes"] - (1 / 3 + 2 / 3 + 0) / 3) < 1e-12
    assert abs(summary["pixel_accuracy"] - 3 / 5) < 1e-12


def test_miou_over_occurring_classes_and_over_all_classes():
    """Ours averages the classes that occur; the official validate() divides by all N."""
    confusion = np.zeros((4, 4))
    confusion[0, 0], confusion[1, 1], confusion[1, 0] = 6, 2, 2  # classes 2 and 3 never occur
    summary = iou_summary(confusion)
    assert abs(summary["miou"] - (6 / 8 + 2 / 4) / 2) < 1e-12
    assert abs(summary["miou_all_classes"] - (6 / 8 + 2 / 4) / 4) < 1e-12
    assert "iou/2" not in summary and abs(summary["pixel_accuracy"] - 0.8) < 1e-12


def test_gaussian_targets_follow_the_reference_rule():
    joints = np.array([[10.0, 21.0], [200.0, 5.0], [30.0, 30.0]], np.float32)
    maps, weights = gaussian_heatmaps(joints, np.array([1, 1, 0]), (16, 12), sigma=2)
    np.testing.assert_array_equal(weights, [1, 0, 0])  # off the heatmap; unlabelled
    # centre int(x / 4 + 0.5): (3, 5); unnormalised peak 1; zero beyond 3 sigma.
    assert maps[5, 3, 0] == 1.0 and np.unravel_index(maps[..., 0].argmax(), (16, 12)) == (5, 3)
    assert abs(maps[5, 4, 0] - np.exp(-1 / 8)) < 1e-6
    assert maps[5, 10, 0] == 0.0 and maps[..., 1:].max() == 0.0


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


def test_classification_loss_and_top_k():
    logits = jnp.array([[2.0, 1.0, 0.5, 0.1], [0.1, 0.2, 3.0, 0.0]])
    labels = jnp.array([1, 2])
    expected = F.cross_entropy(torch.tensor(np.asarray(logits)), torch.tensor([1, 2]),
                               label_smoothing=0.1).item()
    assert abs(float(cross_entropy(logits, labels, 0.1)) - expected) < 1e-6
    np.testing.assert_array_equal(top_k_correct(logits, labels, 1), [0, 1])
    np.testing.assert_array_equal(top_k_correct(logits, labels, 2), [1, 1])
