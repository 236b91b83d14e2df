"""Flip, multi-scale and sliding-window inference: known answers with a pointwise 'model'.
The inference keeps log-scores (log of the summed exp(logits)) on the device: the answers are
their exp, or the logits themselves."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hrnet_jax.inference.segmentation import (BLACK, logits_at_input_size,
                                               multi_scale_log_scores, resize_log_scores,
                                               sliding_window_log_scores)

MIX = np.random.RandomState(0).randn(3, 4).astype(np.float32)


def pointwise(images: np.ndarray) -> np.ndarray:
    """A 'model' whose logits at a pixel depend on that pixel alone: windows cannot change it."""
    return np.asarray(images) @ MIX


def smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([np.sin(x / 7), np.cos(y / 5), np.sin((x + y) / 11)], -1).astype(np.float32)


def test_sliding_windows_reproduce_a_whole_image_prediction():
    image = smooth_image(50, 70)
    whole = pointwise(image[None])[0]
    # 20x30 windows at stride 13x20, last ones flush with the border (Cityscapes) or padded
    # black beyond it (LIP, PASCAL-Context); overlapping scores averaged.
    for pad_to_crop in (False, True):
        np.testing.assert_allclose(
            sliding_window_log_scores(pointwise, image, (20, 30), False, pad_to_crop=pad_to_crop),
            whole, rtol=1e-5, atol=1e-5)


def test_flip_averages_the_mirrored_prediction():
    image = smooth_image(16, 24)
    asymmetric = lambda x: pointwise(x) + np.arange(x.shape[2], dtype=np.float32)[None, None, :, None]
    flipped = logits_at_input_size(asymmetric, image, flip=True)
    # The column ramp averages with its mirror: a constant (width - 1) / 2 over the image.
    np.testing.assert_allclose(flipped, pointwise(image[None])[0] + 11.5, rtol=1e-5, atol=1e-5)


def test_multi_scale_sums_exp_logits_resized_back():
    image = smooth_image(64, 128)
    scales, base, crop = (0.5, 1.0, 1.5), 128, (32, 64)
    total = np.exp(multi_scale_log_scores(pointwise, image, scales, False, base, crop))
    expected = np.zeros((64, 128, 4), np.float32)
    for scale in scales:
        long_side = int(base * scale + 0.5)
        scaled = cv2.resize(image, (long_side, long_side // 2), interpolation=cv2.INTER_LINEAR)
        scores = np.exp(pointwise(scaled[None])[0])  # exponentiated, then resized back
        expected += np.stack([cv2.resize(np.ascontiguousarray(scores[..., k]), (128, 64),
                                         interpolation=cv2.INTER_LINEAR) for k in range(4)], -1)
    np.testing.assert_allclose(total, expected, rtol=2e-3, atol=2e-3)


def test_pad_to_crop_runs_a_small_image_padded_black_and_cuts_the_padding():
    image = smooth_image(30, 40)
    seen = []

    def model(images):
        seen.append(images[0])
        return pointwise(images)

    total = multi_scale_log_scores(model, image, (1.0,), False, 40, (48, 48), pad_to_crop=True)
    assert seen[0].shape == (48, 48, 3)
    np.testing.assert_allclose(np.asarray(seen[0])[30:, :], np.broadcast_to(BLACK, (18, 48, 3)))
    np.testing.assert_allclose(total, pointwise(image[None])[0], rtol=1e-5, atol=1e-5)


def test_flip_test_swaps_the_left_and_right_classes_back():
    """A 'model' that is exactly mirror-symmetric except that it calls the left side of the
    image class 1 and the right side class 2 (LIP's left/right arm): on a mirrored image the
    left side it sees is the original's right. Without swapping 1 and 2 back the flip test
    would average the two sides into a tie; with it, both passes agree."""
    image = smooth_image(16, 24)

    def sides(images):
        width = images.shape[2]
        left = (np.arange(width) < width // 2).astype(np.float32)[None, None, :, None]
        logits = np.zeros((*images.shape[:3], 3), np.float32)
        logits[..., 1:2] = 4 * left
        logits[..., 2:3] = 4 * (1 - left)
        return logits

    plain = logits_at_input_size(sides, image, flip=False)
    swapped = logits_at_input_size(sides, image, flip=True, flip_pairs=((1, 2),))
    np.testing.assert_allclose(swapped, plain)
    unswapped = logits_at_input_size(sides, image, flip=True)
    assert np.allclose(unswapped[..., 1], unswapped[..., 2])  # the tie the swap prevents


@pytest.mark.parametrize("align_corners", [False, True])
def test_score_resizing_in_log_space_is_the_interpolation_matrix_product(align_corners):
    """exp of the resized log-scores: the dense product of the scores with the interpolation
    matrices (PyTorch's sampling rule, float64), up and down, to and from one pixel, with
    scores from exp(-40) to exp(+40) a map."""
    from hrnet_jax.models.layers import interpolation_matrix

    rng = np.random.default_rng(0)
    for (h, w), size in [((16, 32), (64, 128)), ((75, 150), (64, 128)), ((7, 5), (13, 3)),
                         ((1, 1), (4, 4)), ((10, 10), (1, 1))]:
        logits = 10 * rng.normal(size=(h, w, 19))
        rows = interpolation_matrix(h, size[0], align_corners).astype(np.float64)
        cols = interpolation_matrix(w, size[1], align_corners).astype(np.float64)
        dense = np.einsum("Pw,pwc->pPc", cols, np.einsum("Hh,hwc->Hwc", rows, np.exp(logits)))
        resized = resize_log_scores(logits.astype(np.float32), size, align_corners)
        np.testing.assert_allclose(np.asarray(resized, np.float64), np.log(dense), rtol=0,
                                   atol=2e-5)


def test_logits_beyond_float32s_exp_keep_their_argmax():
    """A network confident past exp's float32 range (logits up to ~400: exp is inf) with
    pixels whose every logit is 250 below others' (exp underflows): the multi-scale,
    sliding-window, flip inference's classes are float64's."""
    from hrnet_jax.models.layers import interpolation_matrix

    image = smooth_image(48, 96)
    mix = np.random.RandomState(1).randn(3, 5) * 60

    def confident(images):  # pointwise: windows and mirrors do not change a pixel's logits
        images = np.asarray(images, np.float64)
        return (images @ mix + 200 - 250 * (images[..., :1] > 0.5)).astype(np.float32)

    scales, base, crop = (0.75, 1.0, 1.25), 96, (32, 64)
    log_scores = np.asarray(multi_scale_log_scores(confident, image, scales, True, base, crop))
    assert np.isfinite(log_scores).all()
    expected = np.zeros((48, 96, 5))
    for scale in scales:  # float64 scores, resized back by the dense interpolation matrices
        long_side = int(base * scale + 0.5)
        scaled = cv2.resize(image, (long_side, long_side // 2), interpolation=cv2.INTER_LINEAR)
        scores = np.exp(confident(scaled[None])[0].astype(np.float64))
        rows = interpolation_matrix(scaled.shape[0], 48, False).astype(np.float64)
        cols = interpolation_matrix(scaled.shape[1], 96, False).astype(np.float64)
        expected += np.einsum("Pw,pwc->pPc", cols, np.einsum("Hh,hwc->Hwc", rows, scores))
    agree = log_scores.argmax(-1) == expected.argmax(-1)
    assert agree.mean() > 0.999, agree.mean()
    np.testing.assert_allclose(log_scores, np.log(expected), rtol=1e-5, atol=1e-4)
