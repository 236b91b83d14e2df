"""Top-down geometry and augmentation (hrnet_jax.data.topdown), against the reference's rules."""

from __future__ import annotations

import numpy as np
import pytest

from hrnet_jax.data import topdown
from hrnet_jax.data.datasets.coco import KEYPOINTS as COCO


def test_box_becomes_the_references_centre_and_scale():
    centre, scale = topdown.box_to_centre_scale(np.array([280.79, 44.73, 218.7, 346.68]), 0.75)
    np.testing.assert_allclose(centre, [280.79 + 109.35, 44.73 + 173.34], rtol=1e-6)
    # too narrow for 3:4 -> widened to 0.75 x height; then x 1.25, in units of 200 px
    np.testing.assert_allclose(scale, [346.68 * 0.75 / 200 * 1.25, 346.68 / 200 * 1.25], rtol=1e-6)


def test_affine_crop_without_rotation_is_a_scaled_translation():
    centre, scale = np.array([300.0, 200.0]), np.array([1.5, 2.0])
    matrix = topdown.affine_matrix(centre, scale, 0.0, (192, 256))
    zoom = 192 / (1.5 * 200)  # the box width fills the crop width, both axes alike
    points = np.array([[300.0, 200.0], [150.0, 0.0], [410.0, 333.0]])
    expected = (points - centre) * zoom + [96, 128]
    np.testing.assert_allclose(topdown.apply_affine(points, matrix), expected, atol=1e-4)


def test_rotated_affine_maps_back_with_its_inverse():
    centre, scale = np.array([120.0, 80.0]), np.array([0.6, 0.8])
    forward = topdown.affine_matrix(centre, scale, 30.0, (48, 64))
    back = topdown.affine_matrix(centre, scale, 30.0, (48, 64), inverse=True)
    points = np.random.default_rng(0).uniform(0, 200, (10, 2))
    np.testing.assert_allclose(topdown.apply_affine(topdown.apply_affine(points, forward), back),
                               points, atol=1e-3)
    # the reference's second point: half a box width (60 px) from the centre, turned by 30
    # degrees, becomes the point half a crop width (24 px) above the crop's centre (24, 32)
    turned = centre + 60 * np.array([np.sin(np.pi / 6), -np.cos(np.pi / 6)])
    np.testing.assert_allclose(topdown.apply_affine(turned, forward), [24, 8], atol=1e-4)


def test_mirrored_joints_swap_sides_and_mirror_back():
    joints = np.random.default_rng(1).uniform(0, 300, (17, 2)).astype(np.float32)
    visible = np.ones(17, np.float32)
    visible[3] = 0
    mirrored, mirrored_visible = topdown.mirror_joints(joints, visible, 400, COCO)
    assert mirrored_visible[4] == 0 and mirrored_visible[3] == 1  # left ear <-> right ear
    np.testing.assert_allclose(mirrored[6], [399 - joints[5, 0], joints[5, 1]])
    back, back_visible = topdown.mirror_joints(mirrored, mirrored_visible, 400, COCO)
    np.testing.assert_allclose(back, joints * visible[:, None], atol=1e-4)
    np.testing.assert_array_equal(back_visible, visible)


@pytest.mark.parametrize("seed", range(6))
def test_augmented_crop_keeps_each_joint_on_its_pixel(seed):
    """A dot painted at one joint lands, after random scale, rotation, mirror and crop, where
    the augmented joints say that joint (or its mirror twin) is."""
    image = np.zeros((300, 400, 3), np.uint8)
    joints = np.random.default_rng(seed).uniform(120, 260, (17, 2)).astype(np.float32)
    joints[:, 1] -= 40
    joints[5] = joints[5].round()  # the dot's centre is the joint
    x, y = joints[5].astype(int)
    image[y - 2:y + 3, x - 2:x + 3] = 255
    centre, scale = topdown.box_to_centre_scale(np.array([100, 60, 200, 200]), 0.75)
    example = {"image": image, "joints": joints, "visible": np.ones(17, np.float32),
               "centre": centre, "scale": scale, "rotation": np.float32(0)}
    rng = np.random.default_rng(seed)
    augmented = topdown.random_person_view(example, rng, COCO, 0.75, 0.35, 45.0, True, 0.0)
    crop = topdown.crop_person(augmented, (256, 192))
    mirrored = not np.allclose(augmented["joints"][5], joints[5])  # slots swapped
    joint = 6 if mirrored else 5  # the left shoulder is the mirror image's right shoulder
    grey = crop["image"].max(-1).astype(np.float64)
    ys, xs = np.mgrid[:grey.shape[0], :grey.shape[1]]
    found = np.array([(grey * xs).sum(), (grey * ys).sum()]) / grey.sum()  # the dot's centroid
    np.testing.assert_allclose(found, crop["joints"][joint], atol=0.75)


def test_half_body_box_surrounds_the_chosen_half():
    joints = np.stack([np.full(17, 100.0), np.linspace(0, 320, 17)], -1).astype(np.float32)
    joints[:, 0] += np.linspace(-20, 20, 17)
    for seed in range(5):
        centre, scale = topdown.half_body_box(joints, np.ones(17), COCO, 0.75,
                                              np.random.default_rng(seed))
        half = joints[:11] if centre[1] < joints[11:, 1].min() else joints[11:]
        np.testing.assert_allclose(centre, half.mean(0), rtol=1e-5)
        height = half[:, 1].max() - half[:, 1].min()
        np.testing.assert_allclose(scale[1], height / 200 * 1.5, rtol=1e-5)


def opencv_affine(centre, scale, rotation, output_size, inverse=False):
    """The reference's get_affine_transform, written out: three point pairs -> OpenCV."""
    import cv2

    source_width = float(scale[0]) * topdown.PIXEL_STD
    angle = np.deg2rad(rotation)
    up = np.array([0.5 * source_width * np.sin(angle), -0.5 * source_width * np.cos(angle)])
    out_w, out_h = output_size
    source = np.stack([centre, centre + up, np.zeros(2)]).astype(np.float32)
    target = np.array([[out_w * 0.5, out_h * 0.5], [out_w * 0.5, out_h * 0.5 - 0.5 * out_w],
                       [0, 0]], np.float32)
    for points in (source, target):
        direction = points[0] - points[1]
        points[2] = points[1] + np.array([-direction[1], direction[0]])
    return (cv2.getAffineTransform(target, source) if inverse
            else cv2.getAffineTransform(source, target))


@pytest.mark.parametrize("inverse", [False, True])
def test_batched_affine_matrices_equal_opencvs_to_rounding(inverse):
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 640, (500, 2)).astype(np.float32)
    scales = rng.uniform(0.1, 4, (500, 2)).astype(np.float32)
    rotations = np.where(rng.uniform(size=500) < 0.5, 0.0, rng.uniform(-90, 90, 500))
    found = topdown.affine_matrices(centres, scales, rotations, (192, 256), inverse)
    expected = np.stack([opencv_affine(c, s, r, (192, 256), inverse)
                         for c, s, r in zip(centres, scales, rotations)])
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    import cv2  # warpAffine's inversion of its map, which the device warp repeats

    np.testing.assert_array_equal(topdown.inverse_affine(found),
                                  np.stack([cv2.invertAffineTransform(m) for m in found]))


def test_crops_cut_on_the_device_equal_opencvs(shared_data):
    """hrnet_jax.inference.warp against cv2.warpAffine (what the reference crops with) on the
    real COCO sample: 300 persons of random centre, scale and rotation, many reaching past the
    image's edges (zero there). OpenCV 5 samples in float32 as the device does; where XLA fuses
    a multiply-add OpenCV rounds twice (or the reverse) a value can land one grey level away:
    at most 0.02% of values (measured 0.007%)."""
    import cv2

    from hrnet_jax.inference import warp

    buckets, rng = warp.ImageBuckets(), np.random.default_rng(0)
    differing = total = 0
    for path in sorted((shared_data / "coco_mini" / "val2017").glob("*.jpg")):
        image = cv2.imread(str(path))[:, :, ::-1].copy()
        height, width = image.shape[:2]
        centres = rng.uniform(0, [width, height], (150, 2)).astype(np.float32)
        scales = rng.uniform(0.2, 3, (150, 2)).astype(np.float32)
        rotations = np.where(rng.uniform(size=150) < 0.5, 0.0, rng.uniform(-90, 90, 150))
        forward = topdown.affine_matrices(centres, scales, rotations, (192, 256))
        pixels, extent = buckets(image)
        assert pixels.shape[:2] == (-(-height // 128) * 128, -(-width // 128) * 128)
        steps, starts = warp.sampling_rows(topdown.inverse_affine(forward), 256)
        found = np.asarray(warp.warp_crops(pixels, extent, steps, starts, 192)).astype(int)
        expected = np.stack([cv2.warpAffine(image, m, (192, 256), flags=cv2.INTER_LINEAR)
                             for m in forward])
        assert np.abs(found - expected).max() <= 1
        differing, total = differing + np.count_nonzero(found != expected), total + found.size
    assert differing <= 2e-4 * total, differing / total
