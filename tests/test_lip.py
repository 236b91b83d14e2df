"""LIP: preparation of the real sample, the left/right label swap of the reference, bad input,
and the OCR smoke run (flip test, resize protocol) on the real images."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hrnet_jax.data import prepare
from hrnet_jax.data.datasets.lip import CLASSES, FLIP_PAIRS
from hrnet_jax.data.transforms import random_scale_crop_flip, swap_labels

TRAIN_ID, VAL_ID = "684_2150041", "86_185913"


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("lip_data")
    prepare.prepare("lip", str(shared_data / "lip_mini"), str(data_dir))
    return data_dir


def test_prepared_sample_keeps_labels_exactly_and_grey_images_as_rgb(shared_data, prepared):
    root = shared_data / "lip_mini"
    builder = tfds.builder("hrnet_lip", data_dir=str(prepared))
    for split, image_id in (("train", TRAIN_ID), ("val", VAL_ID)):
        (example,) = list(builder.as_data_source(split))
        label = cv2.imread(str(root / f"{split}_segmentations/{image_id}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(example["label"][..., 0], label)
        assert example["file_name"] in (image_id, image_id.encode())
        original = cv2.imread(str(root / f"{split}_images/{image_id}.jpg"), cv2.IMREAD_UNCHANGED)
        image = example["image"]
        assert image.shape == (*label.shape, 3)
        if original.ndim == 2:  # the grey val image: three equal channels
            assert split == "val"
            assert np.abs(image.astype(int) - original[..., None]).mean() < 2
        else:
            assert np.abs(image.astype(int) - original[..., ::-1]).mean() < 2


def test_flip_swaps_left_and_right_as_the_reference():
    # The reference (lib/datasets/lip.py): right_idx = [15, 17, 19], left_idx = [14, 16, 18].
    official = {14: 15, 15: 14, 16: 17, 17: 16, 18: 19, 19: 18}
    labels = np.arange(20, dtype=np.uint8).reshape(4, 5)
    swapped = swap_labels(labels, FLIP_PAIRS)
    np.testing.assert_array_equal(swapped, np.vectorize(lambda v: official.get(v, v))(labels))
    assert CLASSES[14:20] == ("left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
                              "right-shoe")
    # In the augmentation: a kept image keeps its labels, a mirrored one has them swapped.
    image = np.random.RandomState(0).randint(0, 255, (6, 10, 3)).astype(np.uint8)
    label = np.random.RandomState(1).randint(0, 20, (6, 10)).astype(np.uint8)
    outcomes = set()
    for seed in range(8):
        _, out = random_scale_crop_flip(image, label, np.random.default_rng(seed), 10, (1.0,),
                                        (6, 10), True, 255, FLIP_PAIRS)
        mirrored = np.array_equal(out, swap_labels(label[:, ::-1], FLIP_PAIRS))
        assert mirrored or np.array_equal(out, label)
        outcomes.add(mirrored)
    assert outcomes == {True, False}


def test_bad_input_names_the_id_the_file_and_the_value(shared_data, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(shared_data / "lip_mini", tree)
    with open(tree / "val_id.txt", "a") as f:
        f.write("\n999_missing\n")
    with pytest.raises(FileNotFoundError, match="999_missing"):
        prepare.prepare("lip", str(tree), str(tmp_path / "data1"))
    (tree / "val_id.txt").write_text(VAL_ID + "\n")
    label_path = tree / f"val_segmentations/{VAL_ID}.png"
    label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 25
    cv2.imwrite(str(label_path), label)
    with pytest.raises(ValueError, match=rf"{VAL_ID}\.png: label values \[25\] outside 0..19"):
        prepare.prepare("lip", str(tree), str(tmp_path / "data2"))
    with pytest.raises(FileNotFoundError, match="train_id.txt"):
        prepare.prepare("lip", str(tmp_path), str(tmp_path / "data3"))


def test_ocr_smoke_run_on_the_real_sample_trains_evaluates_and_predicts(prepared, shared_data,
                                                                      tmp_path):
    """seg_lip:ocr,smoke: 473x473 -> 64x64 resize protocol, OCR head with its auxiliary
    loss, flip test with the swap, scores back at the label's size; prediction on a grey JPEG."""
    from hrnet_jax.main import main

    workdir, data = tmp_path / "run", f"--set=data.data_dir={prepared}"
    assert main(["--experiment=seg_lip:ocr,smoke", f"--workdir={workdir}", data]) == 0
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["split"] == "train"]
    assert [l["step"] for l in train] == [2, 4]
    assert all(l["loss"] == pytest.approx(l["main_loss"] + 0.4 * l["aux_loss"], rel=1e-5)
               for l in train)
    evaluation = [l for l in lines if l["split"] == "eval"][-1]
    assert 0.0 <= evaluation["miou"] <= 1.0 and "iou/background" in evaluation
    assert len(list((workdir / "pictures").glob("*.png"))) == 1
    out = tmp_path / "predictions"
    grey = shared_data / "lip_mini" / "val_images" / f"{VAL_ID}.jpg"
    assert main(["--experiment=seg_lip:ocr,smoke", f"--workdir={workdir}", "--mode=predict",
                 f"--input={grey}", f"--output={out}", data]) == 0
    mask = cv2.imread(str(out / f"{VAL_ID}_mask.png"))
    assert mask.shape[:2] == cv2.imread(str(grey), cv2.IMREAD_UNCHANGED).shape


@pytest.mark.slow
def test_plain_w48_smoke_run_on_the_real_sample(prepared, tmp_path):
    from hrnet_jax.main import main

    workdir = tmp_path / "run"
    assert main(["--experiment=seg_lip:smoke", f"--workdir={workdir}",
                 f"--set=data.data_dir={prepared}"]) == 0
    last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "eval" and 0.0 <= last["miou"] <= 1.0
