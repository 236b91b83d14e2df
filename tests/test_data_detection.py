"""Detection data (hrnet_jax/data/detection.py): resizing into size buckets, training boxes and
their masks, orientation-grouped batches that resume where they stopped; and the generated
shapes (data/synthetic.py) boxed tightly."""

from __future__ import annotations

import numpy as np
import pytest

from hrnet_jax.data import detection, pipeline
from hrnet_jax.tasks import make_task

from conftest import detection_smoke_config


def test_resizing_follows_short_800_long_1333_into_the_orientations_bucket():
    assert detection.resize_scale(427, 640, 800, 1333) == pytest.approx(800 / 427)
    assert detection.resize_scale(100, 500, 800, 1333) == pytest.approx(1333 / 500)
    landscape, scale = detection.resize_and_pad(np.full((427, 640, 3), 9, np.uint8), 800, 1333,
                                                (800, 1344))
    assert landscape.shape == (800, 1344, 3) and scale == pytest.approx(800 / 427)
    assert landscape[:800, :1199].min() == 9 and landscape[:, 1199:].max() == 0
    portrait, _ = detection.resize_and_pad(np.full((640, 427, 3), 9, np.uint8), 800, 1333,
                                           (800, 1344))
    assert portrait.shape == (1344, 800, 3) and portrait[1199:].max() == 0
    with pytest.raises(ValueError, match="does not fit the 1000x800 canvas"):
        detection.resize_and_pad(np.zeros((100, 500, 3), np.uint8), 800, 1333, (800, 1000))


def test_training_boxes_leave_out_crowds_and_specks_and_keep_the_largest():
    objects = {"bbox": np.array([[10, 20, 30, 40], [0, 0, 50, 50], [5, 5, 0.5, 9], [1, 1, 2, 2]],
                                np.float32),
               "label": np.array([3, 7, 1, 2]), "iscrowd": np.array([0, 1, 0, 0])}
    out = detection.training_boxes(objects, 2.0, 4)
    np.testing.assert_allclose(out["boxes"][:2], [[20, 40, 80, 120], [2, 2, 6, 6]])
    assert out["labels"].tolist() == [3, 2, 0, 0] and out["box_mask"].tolist() == [1, 1, 0, 0]
    with pytest.warns(UserWarning, match=r"000000785\.jpg: 2 boxes train, data\.max_boxes=1 kept "
                                         r"\(the largest\), 1 dropped"):
        one = detection.training_boxes(objects, 1.0, 1, "000000785.jpg")
    assert one["labels"].tolist() == [3]  # the larger of the two that train
    flipped = detection.flip_boxes(objects["bbox"], 100)
    np.testing.assert_allclose(flipped[0], [60, 20, 30, 40])
    np.testing.assert_allclose(detection.flip_boxes(flipped, 100), objects["bbox"])


def test_box_masks_follow_the_boxes_that_train_and_mirror_with_the_image():
    """training_boxes' box_masks: each kept box's mask resampled inside it, in the kept boxes'
    order (largest first when max_boxes drops some); flip_masks + flip_boxes mirror them."""
    from hrnet_jax.data.synthetic import SyntheticDetection

    record = next(r for r in map(SyntheticDetection(40, (64, 64), seed=3).__getitem__, range(40))
                  if len(r["objects"]["bbox"]) == 3)
    objects = detection.object_arrays(record)
    full = detection.decode_masks(objects["mask"], 64, 64)
    out = detection.training_boxes(objects, 2.0, 4, mask_image_size=(64, 64))
    np.testing.assert_allclose(out["box_masks"][:3],
                               detection.box_relative_masks(full, objects["bbox"]))
    assert out["box_masks"].shape == (4, 56, 56) and out["box_masks"][3].max() == 0
    with pytest.warns(UserWarning, match="1 dropped"):
        two = detection.training_boxes(objects, 1.0, 2, mask_image_size=(64, 64))
    largest = np.argsort(-objects["bbox"][:, 2] * objects["bbox"][:, 3], kind="stable")[:2]
    np.testing.assert_allclose(two["box_masks"], out["box_masks"][largest])
    mirrored = {**objects, "bbox": detection.flip_boxes(objects["bbox"], 64),
                "mask": detection.flip_masks(objects["mask"], 64, 64)}
    np.testing.assert_array_equal(detection.decode_masks(mirrored["mask"], 64, 64), full[:, :, ::-1])
    flipped = detection.training_boxes(mirrored, 2.0, 4, mask_image_size=(64, 64))
    np.testing.assert_allclose(flipped["box_masks"], out["box_masks"][..., ::-1], atol=1e-5)
    del objects["mask"]
    with pytest.raises(ValueError, match="an image: the objects carry no instance masks"):
        detection.training_boxes(objects, 1.0, 4, mask_image_size=(64, 64))


def test_generated_shapes_are_boxed_tightly_and_apart():
    from hrnet_jax.data.synthetic import SyntheticDetection

    source = SyntheticDetection(20, (64, 64), seed=5)
    counts = []
    for index in range(len(source)):
        record = source[index]
        objects = detection.object_arrays(record)
        counts.append(len(objects["bbox"]))
        grey = record["image"].astype(np.float32)
        saturation = grey.max(-1) - grey.min(-1)  # the shapes are saturated, the background grey
        covered = np.zeros((64, 64), bool)
        for x, y, w, h in objects["bbox"].astype(int):
            inside = saturation[y:y + h, x:x + w] > 100
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert not covered[y:y + h, x:x + w].all()
            covered[y:y + h, x:x + w] = True
        assert (saturation > 100)[~covered].mean() < 0.01  # nothing saturated outside the boxes
        masks = detection.decode_masks(objects["mask"], 64, 64).astype(bool)
        for mask, (x, y, w, h) in zip(masks, objects["bbox"].astype(int)):  # tight in the box
            assert mask[y:y + h, x:x + w].sum() == mask.sum() and mask[y].any() and mask[:, x].any()
        assert (masks.any(0) == (saturation > 100)).mean() > 0.98
        assert set(objects["label"].tolist()) <= {0, 1, 2, 3}
    assert min(counts) >= 1 and max(counts) == 3


def test_grouped_batches_hold_one_orientation_and_every_record_once_an_epoch():
    groups = np.array([0] * 11 + [1] * 6)
    sampler = pipeline.GroupedSampler(groups, 4, seed=3)
    epoch = [sampler[i].record_key for i in range(16)]  # 2 + 1 full batches of 4... x4
    batches = np.array(epoch[:12]).reshape(3, 4)
    assert all(len(set(groups[b])) == 1 for b in batches)
    assert len(set(epoch[:12])) == 12 and sorted(groups[epoch[:12]]).count(1) == 4
    again = pipeline.GroupedSampler(groups, 4, seed=3)
    assert [again[i].record_key for i in range(24)] == [sampler[i].record_key for i in range(24)]
    next_epoch = [sampler[i].record_key for i in range(12, 24)]
    assert next_epoch != epoch[:12]  # reshuffled
    with pytest.raises(ValueError, match="no group has 20 records"):
        pipeline.GroupedSampler(groups, 20, seed=0)


def test_grouped_sampler_gives_the_same_order_to_concurrent_readers():
    """grain reads records from several threads at once, across epoch boundaries."""
    from concurrent.futures import ThreadPoolExecutor

    groups = np.random.default_rng(0).integers(0, 2, 50)
    expected = [pipeline.GroupedSampler(groups, 4, seed=1)[i].record_key for i in range(2000)]
    shared = pipeline.GroupedSampler(groups, 4, seed=1)
    positions = np.random.default_rng(1).permutation(2000)
    positions = np.sort(positions.reshape(-1, 40), axis=1).ravel()  # readers close together
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda i: shared[int(i)].record_key, positions))
    assert dict(zip(positions.tolist(), keys)) == dict(enumerate(expected))


def test_training_batches_pad_to_one_bucket_and_resume_where_they_stopped(coco_detection_data):
    """Landscape and portrait records through the loader: each batch has the shape of one
    orientation's canvas (both occur), boxes stay on their objects, and a restored iterator
    continues with the same batches."""
    task = make_task(detection_smoke_config(coco_detection_data))
    fake = []
    for index in range(10):
        height, width = (60, 90) if index < 6 else (90, 60)
        image = np.zeros((height, width, 3), np.uint8)
        image[10:30, 20:50] = 255  # the object, boxed below
        fake.append({"image": image, "objects": {"bbox": np.array([[20, 10, 30, 20]], np.float32),
                                                 "label": np.array([index]), "area": np.array([600.0]),
                                                 "iscrowd": np.array([0])}})
    source = detection.DetectionRecords(fake, list(range(10)), portrait=[6, 7, 8, 9])
    loader = pipeline.train_loader(source, task.prepare, 2, 0, 0, task.augment)
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(5)]
    shapes = {b["image"].shape[1:3] for b in batches}
    assert shapes == {(128, 192), (192, 128)}
    for batch in batches:
        for image, box in zip(batch["image"], batch["boxes"][:, 0]):
            x0, y0, x1, y1 = np.round(box).astype(int)
            inside = image[y0 + 1:y1 - 1, x0 + 1:x1 - 1].mean()
            assert inside > 1.5 and image[..., 0].mean() < inside  # normalised white, on its box
        assert batch["box_mask"][:, 0].tolist() == [1, 1] and batch["box_mask"][:, 1:].max() == 0
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    resumed = iter(loader)
    resumed.set_state(state)
    for a, b in zip(expected, [next(resumed) for _ in range(3)]):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


def test_masks_encode_to_pycocotools_own_strings():
    """Runs counted in each mask's occupied box, compressed by pycocotools: the very strings of
    its encoder, for empty, full, scattered and boxed masks of any size."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for _ in range(300):
        height, width = rng.integers(1, 50, 2)
        masks = np.zeros((4, height, width), bool)
        masks[1] = rng.uniform(size=(height, width)) < 0.5
        masks[2] = True
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        masks[3, y0:rng.integers(y0, height) + 1, x0:rng.integers(x0, width) + 1] = True
        expected = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
                    for m in masks]
        assert detection.encode_masks(masks) == expected
        np.testing.assert_array_equal(detection.decode_masks(expected, height, width), masks)
