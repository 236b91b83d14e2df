"""The COCO detection dataset (hrnet_jax/data/builders/coco_detection.py, datasets/coco.py):
records with every box and instance, bad annotations named, COCO-stuff label maps for HTC,
and its protocol (`summarize`: box and mask AP) by known answers on the real sample."""

from __future__ import annotations

import json
import shutil

import cv2
import jax
import numpy as np
import pytest
from pycocotools import mask as mask_utils
import tensorflow_datasets as tfds

from hrnet_jax.data import detection, prepare
from hrnet_jax.data.detection import rle_strings
from hrnet_jax.data.datasets import coco as coco_categories
from hrnet_jax.detection import paste
from hrnet_jax.experiments import load
from hrnet_jax.metrics import coco
from hrnet_jax.tasks import make_task

from conftest import (
    coco_detection_records,
    detection_smoke_config,
    perfect_head_outputs,
)


def test_records_hold_every_box_with_its_contiguous_label(coco_detection_data, shared_data):
    with open(shared_data / "coco_mini/annotations/person_keypoints_val2017.json") as f:
        truth = json.load(f)
    source = coco_detection_records(coco_detection_data)
    assert [int(source[i]["image_id"]) for i in range(len(source))] == [785, 40083]
    for index in range(len(source)):
        record = source[index]
        objects = detection.object_arrays(record)
        expected = [a for a in truth["annotations"] if a["image_id"] == int(record["image_id"])]
        np.testing.assert_allclose(objects["bbox"], [a["bbox"] for a in expected], rtol=1e-6)
        assert objects["label"].tolist() == [0] * len(expected)  # person, COCO id 1
        height, width = record["image"].shape[:2]  # the polygons, kept as RLE, cover the areas
        areas = detection.decode_masks(objects["mask"], height, width).sum(axis=(1, 2))
        np.testing.assert_allclose(areas, [a["area"] for a in expected], rtol=0.02)
        assert record["image"].shape[:2] == (425, 640) if index == 0 else (333, 500)
    metadata = tfds.builder("hrnet_coco_detection", data_dir=str(coco_detection_data)).info.metadata["val"]
    assert metadata["training_records"] == [0, 1] and metadata["portrait_records"] == []
    assert coco_categories.NAMES[coco_categories.LABEL_OF_ID[90]] == "toothbrush"
    assert len(set(coco_categories.CATEGORY_IDS)) == 80


def coco_tree(shared_data, tmp_path, edit) -> tuple:
    """A COCO folder of the sample's images and its annotations changed by `edit(data)`."""
    root = tmp_path / "coco"
    shutil.copytree(shared_data / "coco_mini/val2017", root / "val2017")
    (root / "annotations").mkdir()
    with open(shared_data / "coco_mini/annotations/person_keypoints_val2017.json") as f:
        data = json.load(f)
    edit(data)
    (root / "annotations/instances_val2017.json").write_text(json.dumps(data))
    return root, data


def test_bad_annotations_are_named_with_their_image_and_the_rest_kept(shared_data, tmp_path):
    """An unknown category (left out), a box under 1x1 pixel (kept for evaluation, not for
    training) and a polygon of two points (box kept, mask empty): each warning names the image
    and the annotation, and the preparation keeps everything else."""
    def edit(data):
        data["annotations"][0]["category_id"] = 12  # a gap in COCO's ids
        data["annotations"][1]["bbox"][2] = 0.0
        data["annotations"][2]["segmentation"] = [[10.0, 10.0, 20.0, 20.0]]  # two points

    root, data = coco_tree(shared_data, tmp_path, edit)
    file_names = {image["id"]: image["file_name"] for image in data["images"]}
    unknown, speck, polygon_less = data["annotations"][:3]
    with pytest.warns(UserWarning) as caught:
        prepare.prepare("coco_detection", str(root), str(tmp_path / "tfds"))
    messages = "\n".join(str(w.message) for w in caught)
    for annotation, words in ((unknown, "has category id 12, not one of COCO's 80 detection "
                                        "categories: left out"),
                              (speck, "has a 0.0x"), (polygon_less, "has no polygon")):
        assert f"{file_names[annotation['image_id']]}: annotation {annotation['id']} {words}" \
            in messages, messages
    source = tfds.builder("hrnet_coco_detection", data_dir=str(tmp_path / "tfds")).as_data_source("val")
    kept = {int(source[i]["image_id"]): detection.object_arrays(source[i])
            for i in range(len(source))}
    for image_id, objects in kept.items():
        expected = [a for a in data["annotations"] if a["image_id"] == image_id and a is not unknown]
        assert len(objects["bbox"]) == len(expected)
    masks = [m.decode() if isinstance(m, bytes) else m for m in kept[polygon_less["image_id"]]["mask"]]
    assert "" in masks


def test_ground_truth_as_detections_scores_ap_one(coco_detection_data):
    """The sample's person boxes given as detections: box AP 1.0 through pycocotools."""
    source = coco_detection_records(coco_detection_data)
    images, rows = [], {k: [] for k in ("image_id", "bbox", "category_id", "area", "iscrowd")}
    for index in range(len(source)):
        record = source[index]
        objects = detection.object_arrays(record)
        images.append({"id": int(record["image_id"]), "height": record["image"].shape[0],
                       "width": record["image"].shape[1]})
        rows["image_id"] += [int(record["image_id"])] * len(objects["bbox"])
        rows["bbox"] += list(objects["bbox"])
        rows["category_id"] += [1] * len(objects["bbox"])
        rows["area"] += list(objects["area"])
        rows["iscrowd"] += list(objects["iscrowd"])
    rows = {k: np.asarray(v) for k, v in rows.items()}
    truth = coco.box_ground_truth(images, rows, coco_categories.CATEGORIES)
    results = coco.box_results(rows["image_id"], rows["bbox"], np.ones(len(rows["bbox"])),
                               rows["category_id"])
    figures = coco.box_ap(truth, results)
    assert figures["ap"] == pytest.approx(1.0) and figures["ar100"] == pytest.approx(1.0)
    assert figures["ap_s"] == -1.0 or figures["ap_s"] == pytest.approx(1.0)
    shifted = [{**r, "bbox": [r["bbox"][0] + 0.6 * r["bbox"][2], *r["bbox"][1:]]} for r in results]
    assert coco.box_ap(truth, shifted)["ap"] < 0.1  # IoU 0.25: a miss at every threshold


def test_ground_truth_through_our_targets_and_decoding_scores_ap_one(coco_detection_data):
    """The task's evaluation with the network replaced by the training targets of the resized
    image (probability 1 at positives, the target distances): prepare, assignment, decoding,
    NMS and the mapping back to the original pixels give box AP 1.0 on the real images."""
    config = detection_smoke_config(coco_detection_data)
    task = make_task(config)
    strides = tuple(config.model.detector.strides)
    source = coco_detection_records(coco_detection_data)
    rows = []
    for index in range(len(source)):
        record = dict(source[index])
        example = task.prepare(record)
        height, width = example["image"].shape[:2]
        shapes = [(-(-height // s), -(-width // s)) for s in strides]
        outputs = perfect_head_outputs(shapes, strides, example["boxes"], example["labels"],
                                       example["box_mask"], 80)
        predict = lambda images, image_sizes=None: jax.device_get(task.postprocess(outputs))
        rows.append(task.evaluate_image(predict, record))
    # an image without boxes (48 in val2017) and without detections adds nothing but itself
    empty = {"image": np.zeros((50, 80, 3), np.uint8), "image_id": 7,
             "objects": {"bbox": [], "label": [], "area": [], "iscrowd": []}}
    nothing = {"boxes": np.zeros((1, 100, 4)), "scores": np.zeros((1, 100)),
               "classes": -np.ones((1, 100), int), "valid": np.zeros((1, 100), bool)}
    rows.append(task.evaluate_image(lambda images, image_sizes=None: nothing, empty))
    assert rows[-1]["image"].tolist() == [[7, 50, 80]] and len(rows[-1]["truth_bbox"]) == 0
    combined = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    assert len(combined["bbox"]) == 4
    figures = task.summarize(combined)
    assert figures["ap"] == pytest.approx(1.0) and figures["detections"] == 4


def test_ground_truth_masks_as_detections_score_mask_ap_one(coco_detection_data):
    """pycocotools' segm evaluation on the sample's real instance masks: the ground truth as
    detections scores mask AP 1.0; the masks squeezed through Mask R-CNN's 28x28 box-relative
    grid and pasted back (bilinear, >= 0.5) keep IoU >= 0.85 with the truth and AP50 1.0."""
    source = coco_detection_records(coco_detection_data)
    images, truth_rows, exact, pasted = [], [], [], []
    for index in range(len(source)):
        record = source[index]
        objects = detection.object_arrays(record)
        height, width = record["image"].shape[:2]
        image_id = int(record["image_id"])
        images.append({"id": image_id, "height": height, "width": width})
        count = len(objects["bbox"])
        truth_rows.append({"image_id": np.full(count, image_id), "bbox": objects["bbox"],
                           "category_id": np.asarray(coco_categories.CATEGORY_IDS)[objects["label"]],
                           "area": objects["area"], "iscrowd": objects["iscrowd"],
                           "mask": objects["mask"]})
        full = detection.decode_masks(objects["mask"], height, width)
        small = detection.box_relative_masks(full, objects["bbox"], 28)
        corners = np.concatenate([objects["bbox"][:, :2], objects["bbox"][:, :2] + objects["bbox"][:, 2:]], 1)
        back = coco.paste_masks(small, corners, height, width)
        for truth_mask, mask in zip(full.astype(bool), back):
            assert (truth_mask & mask).sum() / (truth_mask | mask).sum() >= 0.85
        for rows, masks in ((exact, objects["mask"]), (pasted, coco.encode_masks(back))):
            rows.append({"image_id": np.full(count, image_id), "mask": list(masks),
                         "size": np.tile([height, width], (count, 1)),
                         "category_id": np.asarray(coco_categories.CATEGORY_IDS)[objects["label"]]})
    objects = {k: np.concatenate([r[k] for r in truth_rows]) for k in truth_rows[0]}
    truth = coco.box_ground_truth(images, objects, coco_categories.CATEGORIES)

    def results(rows):
        return coco.mask_results(np.concatenate([r["image_id"] for r in rows]),
                                 [m for r in rows for m in r["mask"]],
                                 np.concatenate([r["size"] for r in rows]),
                                 np.ones(sum(len(r["mask"]) for r in rows)),
                                 np.concatenate([r["category_id"] for r in rows]))

    assert coco.mask_ap(truth, results(exact))["ap"] == pytest.approx(1.0)
    assert coco.mask_ap(truth, results(pasted))["ap50"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def coco_with_stuff(shared_data, tmp_path_factory):
    """The COCO sample with COCO-stuff label maps beside it, made here: image 785's from its
    person masks (label 0, person; 150 elsewhere; a 255 band), image 40083's of the wrong size
    (to be named and stored unlabelled). Prepared into a fresh data_dir."""
    import json

    from hrnet_jax.data import prepare
    from hrnet_jax.data.detection import decode_masks, instance_rle

    root = tmp_path_factory.mktemp("coco_stuff")
    for part in ("annotations", "val2017"):
        (root / part).symlink_to(shared_data / "coco_mini" / part)
    folder = root / "stuffthingmaps" / "val2017"
    folder.mkdir(parents=True)
    truth = json.loads((shared_data / "coco_mini/annotations/person_keypoints_val2017.json")
                       .read_text())
    image = next(i for i in truth["images"] if i["id"] == 785)
    height, width = image["height"], image["width"]
    labels = np.full((height, width), 150, np.uint8)
    for annotation in truth["annotations"]:
        if annotation["image_id"] == 785:
            rle = instance_rle(annotation["segmentation"], height, width)
            labels[decode_masks([rle], height, width)[0] > 0] = 0
    labels[:5] = 255
    cv2.imwrite(str(folder / "000000000785.png"), labels)
    cv2.imwrite(str(folder / "000000040083.png"), np.zeros((10, 12), np.uint8))
    data_dir = tmp_path_factory.mktemp("tfds_stuff")
    with pytest.warns(UserWarning, match=r"000000040083\.png: 12x10 pixels"):
        prepare.prepare("coco_detection", str(root), str(data_dir))
    return data_dir, labels


def test_coco_stuff_maps_are_kept_beside_the_instances_and_bad_ones_named(coco_with_stuff):
    import tensorflow_datasets as tfds

    data_dir, labels = coco_with_stuff
    builder = tfds.builder("hrnet_coco_detection", data_dir=str(data_dir))
    assert builder.info.metadata["val"]["semantic_labels"] is True
    source = builder.as_data_source("val")
    by_id = {int(source[i]["image_id"]): source[i] for i in range(len(source))}
    np.testing.assert_array_equal(by_id[785]["semantic"][..., 0], labels)
    bad = by_id[40083]["semantic"]
    assert bad.shape[:2] == by_id[40083]["image"].shape[:2] and (bad == 255).all()


def test_htc_training_targets_come_from_the_maps_and_without_them_name_the_folder(
        coco_with_stuff, shared_data, tmp_path):
    """HTC's `semantic` target: the map resized with the image, padded with 255, at 1/8; a
    dataset coco_detection_data without stuffthingmaps/ is refused naming the folder to add."""
    import tensorflow_datasets as tfds

    from hrnet_jax.data import prepare
    from hrnet_jax.tasks import make_task

    data_dir, labels = coco_with_stuff
    config = load("det_coco_cascade:htc,w18,smoke")
    config.data.data_dir = str(data_dir)
    task = make_task(config)
    source = tfds.builder("hrnet_coco_detection", data_dir=str(data_dir)).as_data_source("val")
    record = next(source[i] for i in range(len(source)) if int(source[i]["image_id"]) == 785)
    example = task.prepare({**record, "short_side": 128})
    canvas = example["image"].shape[:2]
    assert example["semantic"].shape == (canvas[0] // 8, canvas[1] // 8)
    height, width = example["image_size"]
    inside = example["semantic"][:height // 8, :width // 8]
    assert set(np.unique(inside)) <= {0, 150, 255} and (inside == 0).any() and (inside == 150).any()
    assert (example["semantic"][-1] == 255).all() or height == canvas[0]  # the padding
    plain = tmp_path / "plain"
    prepare.prepare("coco_detection", str(shared_data / "coco_mini"), str(plain))
    record = tfds.builder("hrnet_coco_detection", data_dir=str(plain)).as_data_source("val")[0]
    with pytest.raises(ValueError, match=r"stuffthingmaps/train2017"):
        task.prepare({**record, "short_side": 128})


def test_a_stuff_map_with_labels_outside_the_183_classes_is_named(tmp_path):

    from hrnet_jax.data.builders.coco_detection import semantic_map

    labels = np.zeros((6, 8), np.uint8)
    labels[2, 3], labels[0, 0] = 200, 255  # 200: no class; 255: unlabelled, fine
    cv2.imwrite(str(tmp_path / "000000000001.png"), labels)
    image = {"file_name": "000000000001.jpg", "height": 6, "width": 8}
    with pytest.warns(UserWarning, match=r"000000000001\.png: labels \[200\] outside"):
        stored = semantic_map(str(tmp_path), image)
    assert stored.shape == (6, 8, 1) and (stored == 255).all()
    labels[2, 3] = 182
    cv2.imwrite(str(tmp_path / "000000000001.png"), labels)
    np.testing.assert_array_equal(semantic_map(str(tmp_path), image)[..., 0], labels)


@pytest.mark.parametrize("content,named", [
    ('{"images": [', "not JSON (Expecting value at line 1, column 13)"),
    ('{"images": []}', "no annotations list: not a COCO annotation file"),
    ('{"images": [{"id": 1}], "annotations": [{"id": 7, "image_id": 1, "category_id": 1}]}',
     "annotations[0] (id 7) has no bbox"),
])
def test_a_broken_annotation_file_is_one_line_naming_it(tmp_path, content, named):
    from hrnet_jax.data.prepare import main as prepare_main

    (tmp_path / "annotations").mkdir()
    broken = tmp_path / "annotations" / "instances_val2017.json"
    broken.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        prepare_main(["coco_detection", f"--manual_dir={tmp_path}",
                      f"--data_dir={tmp_path / 'out'}"])
    assert str(stopped.value) == f"error: coco_detection: {broken}: {named} (--verbose shows where)"
    with pytest.raises(ValueError, match="not JSON|no annotations|has no bbox"):
        prepare_main(["coco_detection", f"--manual_dir={tmp_path}",
                      f"--data_dir={tmp_path / 'out2'}", "--verbose"])


def test_masks_pasted_around_their_boxes_are_those_pasted_over_the_image():
    """Mask R-CNN's 28x28 probabilities warped over each box's surroundings only, against the
    same warp over the whole image: nothing outside, and inside the same pixels but where a
    probability within float rounding of the 0.5 threshold lands on the other side (measured:
    3 pixels a million)."""
    rng = np.random.default_rng(0)
    height, width, flipped, total = 480, 640, 0, 0
    for _ in range(5):
        corners = rng.uniform(-20, 1, (100, 2)) + rng.uniform(0, 1, (100, 2)) * [600, 440]
        boxes = np.concatenate([corners, corners + rng.uniform(0.5, 300, (100, 2))], 1)
        probabilities = rng.uniform(0, 1, (100, 28, 28)).astype(np.float32)
        pasted = coco.paste_masks(probabilities, boxes.astype(np.float32), height, width)
        size = probabilities.shape[-1]
        for mask, probability, (x0, y0, x1, y1) in zip(pasted, probabilities, boxes):
            w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
            affine = np.array([[size / w, 0, (0.5 - x0) * size / w - 0.5],
                               [0, size / h, (0.5 - y0) * size / h - 0.5]], np.float64)
            whole = cv2.warpAffine(probability, affine, (width, height),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) >= 0.5
            flipped += int((mask != whole).sum())
            total += int(whole.sum())
    assert total > 10 ** 6 and flipped <= 1e-5 * total


def test_masks_pasted_and_run_length_coded_on_the_device_are_pycocotools_strings(monkeypatch):
    """Evaluation's strings (hrnet_jax.detection.paste: pasted, run-length coded and written as
    characters on the device, cut into strings on the host) against pycocotools' encoding of
    the host's OpenCV paste: the same strings but where a probability within float rounding of
    0.5 lands on the other side (measured: 1 pixel in 500 masks). Noise probabilities give more
    transitions than the (here small) buffer holds: the device program is run again with a
    larger one. Masks not `valid` are left out."""
    monkeypatch.setattr(paste, "CAPACITY", 4096)
    capacities, program = [], paste.pasted_characters
    monkeypatch.setattr(paste, "pasted_characters", lambda *args: (
        capacities.append(args[-1]), program(*args))[1])
    rng = np.random.default_rng(0)
    height, width, flipped, total, same, masks = 150, 200, 0, 0, 0, 0
    for image in range(4):
        corners = rng.uniform(-20, 1, (100, 2)) + rng.uniform(0, 1, (100, 2)) * [190, 140]
        boxes = np.concatenate([corners, corners + rng.uniform(0.5, 120, (100, 2))], 1)
        boxes = boxes.astype(np.float32)
        probabilities = rng.uniform(0, 1, (100, 28, 28)).astype(np.float32)
        if image % 2:  # smooth masks, as a trained network's: a few runs a column
            probabilities = cv2.GaussianBlur(probabilities.transpose(1, 2, 0), (0, 0), 3
                                             ).transpose(2, 0, 1) * 2 - 0.5
        valid = rng.uniform(size=100) < 0.9
        encoded = paste.pasted_rles(probabilities, boxes, height, width, valid)
        pasted = coco.paste_masks(probabilities[valid], boxes[valid], height, width)
        assert len(encoded) == valid.sum()
        masks += len(encoded)
        for counts, mask in zip(encoded, pasted):
            expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
            same += counts == expected.decode()
            found = mask_utils.decode({"size": [height, width], "counts": counts.encode()})
            flipped += int((found != mask).sum())
            total += int(mask.sum())
    assert total > 5 * 10 ** 4 and flipped <= 1e-5 * total, flipped
    assert same >= masks - 3, (same, masks)
    assert max(capacities) > 4096 and min(capacities) == 4096  # the noise ran again


def test_run_length_strings_are_pycocotools():
    """The host's coder (encode_region: run_lengths, then rle_strings for all masks at once)
    and the device's (paste.rle_characters, from a mask's transitions) against pycocotools'
    encoder: random, empty, full and striped masks, runs past 2^31."""
    rng = np.random.default_rng(1)
    height, width = 40, 30
    masks = [[rng.uniform(size=(height, width)) < 0.5, np.zeros((height, width), bool),
              np.ones((height, width), bool),
              np.arange(width)[None] % 3 == np.zeros((height, 1))][index % 4]
             for index in range(12)]
    expected = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
                for m in masks]
    assert [detection.encode_region(m, 0, 0, height, width) for m in masks] == expected
    region = rng.uniform(size=(9, 7)) < 0.5  # a region within a larger image
    whole = np.zeros((50, 60), bool)
    whole[20:29, 33:40] = region
    assert detection.encode_region(region, 20, 33, 50, 60) == mask_utils.encode(
        np.asfortranarray(whole.astype(np.uint8)))["counts"].decode()
    big = [5, 2 ** 30, 7, 123456789, 3, 2 ** 31 + 12345]  # pycocotools counts in uint32
    assert rle_strings(np.array(big), np.array([6])) == [mask_utils.frPyObjects(
        {"counts": big, "size": [sum(big), 1]}, sum(big), 1)["counts"].decode()]
    # the device's: every mask's transitions in column-major order, into a fixed buffer
    flats = [m.T.ravel() for m in masks]
    transitions = [np.flatnonzero(f != np.concatenate([[False], f[:-1]])) for f in flats]
    positions = np.zeros(4096, np.int32)
    positions[:sum(map(len, transitions))] = np.concatenate(transitions)
    text, lengths = jax.device_get(paste.rle_characters(
        positions, np.array([len(t) for t in transitions], np.int32), height * width, 8192))
    text = text[:lengths.sum()].tobytes().decode()
    assert [text[end - size:end] for end, size in zip(np.cumsum(lengths), lengths)] == expected