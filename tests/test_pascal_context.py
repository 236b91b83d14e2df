"""PASCAL-Context: preparation from the official Detail JSON and from mmsegmentation's PNG
layout, the 459 -> 59/60 mapping against the official code's table, bad input, and the OCR
smoke run. No real sample is shipped: the tree below is generated (random pixels, rectangles
of random categories) in the real file layout and JSON schema."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from pycocotools import mask as mask_utils

from hrnet_jax.data import datasets, prepare
from hrnet_jax.data.datasets.pascal_context import CATEGORIES, CLASSES_59, CLASSES_60

# The official code's `_mapping` (HRNet-Semantic-Segmentation lib/datasets/pascal_ctx.py, from
# PyTorch-Encoding), as written there: the Detail ids of background and the 59 categories.
OFFICIAL_MAPPING = [0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158,
                    159, 416, 33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31,
                    232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360,
                    98, 187, 104, 105, 366, 189, 368, 113, 115]
# mmsegmentation's PascalContextDataset.CLASSES (60, background first).
MMSEG_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood")
IMAGES = (("2008_000002", (48, 64), "train"), ("2008_000003", (56, 40), "train"),
          ("2008_000007", (40, 60), "val"))


def expected_label(ids: np.ndarray) -> np.ndarray:
    """The official `_class_to_index`: the index of each id in the sorted mapping."""
    index = {category: label for label, category in enumerate(sorted(OFFICIAL_MAPPING))}
    return np.vectorize(index.__getitem__)(ids).astype(np.uint8)


def official_tree(root, rng, corrupt: str = ""):
    """VOCdevkit/VOC2010 with JPEGImages/ and trainval_merged.json; returns each image's
    expected 60-class labels."""
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    detail = {"info": {}, "images": [], "annos_segmentation": [], "annos_occlusion": [],
              "annos_boundary": [], "parts": [],
              "categories": [{"category_id": c, "name": n, "supercategory": "object",
                              "onlysemantic": 0, "parts": []} for c, n in CATEGORIES]}
    labels = {}
    for number, (name, (height, width), phase) in enumerate(IMAGES):
        cv2.imwrite(str(voc / "JPEGImages" / f"{name}.jpg"),
                    rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        image_id = int(name.replace("_", ""))
        detail["images"].append({"image_id": image_id, "file_name": f"{name}.jpg",
                                 "height": height, "width": width, "phase": phase})
        if corrupt == "no_annotation" and number == 2:
            continue
        ids = np.zeros((height, width), np.int64)  # the Detail API's painting, in file order
        for k in range(4):
            category = int(rng.choice([c for c, _ in CATEGORIES]))
            if corrupt == "unknown_category" and number == 1 and k == 0:
                category = 1  # not a PASCAL-Context category
            y0, x0 = rng.integers(0, height - 8), rng.integers(0, width - 8)
            region = np.zeros((height, width), np.uint8)
            region[y0:y0 + rng.integers(6, 30), x0:x0 + rng.integers(6, 30)] = 1
            rle = mask_utils.encode(np.asfortranarray(region))
            rle["counts"] = rle["counts"].decode()
            detail["annos_segmentation"].append({
                "id": len(detail["annos_segmentation"]) + 1, "image_id": image_id,
                "category_id": category, "segmentation": rle, "iscrowd": 0, "parts": [],
                "area": int(region.sum()), "bbox": [int(x0), int(y0), 1, 1]})
            ids[region > 0] = category
        if not corrupt:
            labels[name] = expected_label(ids)
    (voc / "trainval_merged.json").write_text(json.dumps(detail))
    return labels


def mmseg_tree(root, official_root, labels):
    """The same images in mmsegmentation's converted layout (PNG labels, image lists)."""
    voc = root / "VOC2010"
    (voc / "SegmentationClassContext").mkdir(parents=True)
    (voc / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (voc / "JPEGImages").symlink_to(official_root / "VOCdevkit" / "VOC2010" / "JPEGImages")
    for name, label in labels.items():
        cv2.imwrite(str(voc / "SegmentationClassContext" / f"{name}.png"), label)
    for split in ("train", "val"):
        (voc / "ImageSets" / "SegmentationContext" / f"{split}.txt").write_text(
            "".join(f"{name}\n" for name, _, phase in IMAGES if phase == split))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pascal_context")
    labels = official_tree(root / "official", np.random.default_rng(0))
    prepare.prepare("pascal_context", str(root / "official"), str(root / "data"))
    return root, labels


def stored(data_dir) -> dict[str, dict]:
    builder = tfds.builder("hrnet_pascal_context", data_dir=str(data_dir))
    out = {}
    for split in ("train", "val"):
        for example in builder.as_data_source(split):
            name = example["file_name"]
            out[name.decode() if isinstance(name, bytes) else name] = example
    return out


def test_class_table_is_the_official_one():
    assert [c for c, _ in CATEGORIES] == sorted(OFFICIAL_MAPPING)[1:]
    assert CLASSES_60 == MMSEG_CLASSES and CLASSES_59 == MMSEG_CLASSES[1:]


def test_detail_json_and_mmseg_pngs_prepare_the_same_official_labels(prepared):
    root, labels = prepared
    from_json = stored(root / "data")
    assert sorted(from_json) == sorted(labels)
    for name, label in labels.items():
        np.testing.assert_array_equal(from_json[name]["label"][..., 0], label)
        assert from_json[name]["image"].shape == (*label.shape, 3)
    mmseg_tree(root / "mmseg", root / "official", labels)
    prepare.prepare("pascal_context60", str(root / "mmseg"), str(root / "data_mmseg"))
    from_pngs = stored(root / "data_mmseg")
    for name, label in labels.items():
        np.testing.assert_array_equal(from_pngs[name]["label"][..., 0], label)


def test_59_classes_ignore_the_background_and_60_keep_it():
    from hrnet_jax import experiments
    from hrnet_jax.tasks import make_task

    stored_label = np.array([[0, 1, 59], [30, 0, 2]], np.uint8)
    example = {"image": np.zeros((2, 3, 3), np.uint8), "label": stored_label[..., None]}
    task59 = make_task(experiments.load("seg_pascal_context:smoke"))
    task60 = make_task(experiments.load("seg_pascal_context:60,ocr,smoke"))
    np.testing.assert_array_equal(task59.prepare(example)["label"],
                                  [[255, 0, 58], [29, 255, 1]])
    np.testing.assert_array_equal(task60.prepare(example)["label"], stored_label)
    assert task59.class_names[0] == "aeroplane" and task60.class_names[0] == "background"
    # Training maps the labels once: the augmentation resamples stored labels, `prepare` maps.
    config = experiments.load("seg_pascal_context:smoke")
    config.data.train_scales, config.data.flip = (1.0,), False
    task = make_task(config)
    stored_64 = np.random.default_rng(0).integers(0, 60, (64, 64)).astype(np.uint8)
    record = {"image": np.zeros((64, 64, 3), np.uint8), "label": stored_64[..., None]}
    trained = task.prepare(task.augment(record, np.random.default_rng(0)))["label"]
    np.testing.assert_array_equal(trained, np.where(stored_64 == 0, 255, stored_64 - 1))
    assert datasets.get("pascal_context").names(59) == list(CLASSES_59)


def test_bad_input_names_the_image_and_the_value(tmp_path):
    official_tree(tmp_path / "a", np.random.default_rng(1), corrupt="no_annotation")
    with pytest.raises(ValueError, match="no segmentation annotation for image 2008_000007.jpg"):
        prepare.prepare("pascal_context", str(tmp_path / "a"), str(tmp_path / "data_a"))
    official_tree(tmp_path / "b", np.random.default_rng(1), corrupt="unknown_category")
    with pytest.raises(ValueError, match=r"2008_000003.jpg .*category ids \[1\]"):
        prepare.prepare("pascal_context", str(tmp_path / "b"), str(tmp_path / "data_b"))
    labels = {name: np.full(size, 60, np.uint8) for name, size, _ in IMAGES}
    official_tree(tmp_path / "c", np.random.default_rng(1))
    mmseg_tree(tmp_path / "d", tmp_path / "c", labels)
    with pytest.raises(ValueError, match=r"2008_000002.png: label values \[60\] outside 0..59"):
        prepare.prepare("pascal_context", str(tmp_path / "d"), str(tmp_path / "data_d"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("not VOC")
    with pytest.raises(FileNotFoundError, match="(?s)no VOC2010 JPEGImages/ in .*trainval_merged.json"):
        prepare.prepare("pascal_context", str(tmp_path / "empty"), str(tmp_path / "data_e"))


def test_ocr_smoke_run_evaluates_multi_scale_with_flip(prepared, tmp_path):
    from hrnet_jax.main import main

    root, _ = prepared
    workdir = tmp_path / "run"
    assert main(["--experiment=seg_pascal_context:ocr,smoke", f"--workdir={workdir}",
                 f"--set=data.data_dir={root / 'data'}"]) == 0
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evaluation = [l for l in lines if l["split"] == "eval"][-1]
    assert 0.0 <= evaluation["miou"] <= 1.0
    assert set(k[4:] for k in evaluation if k.startswith("iou/")) <= set(CLASSES_59)
    assert all(np.isfinite(l["loss"]) for l in lines if l["split"] == "train")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["seg_pascal_context:smoke",
                                        "seg_pascal_context:60,ocr,smoke"])
def test_the_other_smoke_runs_log_miou(prepared, tmp_path, experiment):
    from hrnet_jax.main import main

    root, _ = prepared
    workdir = tmp_path / "run"
    assert main([f"--experiment={experiment}", f"--workdir={workdir}",
                 f"--set=data.data_dir={root / 'data'}"]) == 0
    last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "eval" and 0.0 <= last["miou"] <= 1.0
