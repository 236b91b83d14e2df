"""Cityscapes: preparation from the official layouts into ArrayRecord, trainId labels."""

from __future__ import annotations

import re
import shutil
import zipfile

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage

from conftest import record_compression
from hrnet_jax.data import prepare
from hrnet_jax.data.datasets.cityscapes import CLASSES, PALETTE, to_train_ids

STEM = "frankfurt_000000_000294"


def read(path, flags=cv2.IMREAD_UNCHANGED) -> np.ndarray:
    return cv2.imread(str(path), flags)


@pytest.fixture(scope="module")
def sample(shared_data):
    root = shared_data / "cityscapes_mini"
    gt = root / "gtFine" / "val" / "frankfurt"
    return {"root": root,
            "image": read(root / "leftImg8bit" / "val" / "frankfurt" / f"{STEM}_leftImg8bit.png",
                          cv2.IMREAD_COLOR)[..., ::-1],
            "label_ids": read(gt / f"{STEM}_gtFine_labelIds.png"),
            "train_ids": read(gt / f"{STEM}_gtFine_labelTrainIds.png")}


def only_example(data_dir):
    source = tfds.builder("hrnet_cityscapes", data_dir=str(data_dir)).as_data_source("val")
    assert len(source) == 1
    return source[0]


def test_prepared_tree_reproduces_the_real_train_id_file(sample, tmp_path):
    prepare.prepare("cityscapes", str(sample["root"]), str(tmp_path))
    example = only_example(tmp_path)
    np.testing.assert_array_equal(example["label"][..., 0], sample["train_ids"])
    np.testing.assert_array_equal(example["image"], sample["image"])
    assert example["file_name"] in (STEM, STEM.encode())


def test_raw_pixel_storage_holds_the_same_arrays_and_gives_the_same_batches(sample, tmp_path):
    """cityscapes_raw (pixels stored raw, fast to read): the records' very arrays, hence the
    training pipeline's very batches for the same seed."""
    from hrnet_jax import experiments
    from hrnet_jax.data import pipeline
    from hrnet_jax.tasks import make_task

    batches = {}
    for name in ("cityscapes", "cityscapes_raw"):
        prepare.prepare(name, str(sample["root"]), str(tmp_path))
        config = experiments.load("seg_cityscapes:smoke")
        config.data.name, config.data.data_dir, config.data.train_split = name, str(tmp_path), "val"
        task = make_task(config)
        train, evaluation = task.dataset.sources(config.data)
        stored = task.dataset.prepared_builder(str(tmp_path)).info.features["image"]
        assert isinstance(stored, tfds.features.Tensor if name.endswith("raw")  # no codec
                          else tfds.features.Image)
        # the raw variant's records uncompressed too (zstd was half of reading one); the
        # PNGs' as tfds writes them
        assert record_compression(task.dataset.prepared_builder(str(tmp_path)).data_dir) == (
            {"uncompressed"} if name.endswith("raw") else {"zstd:3"})
        if name.endswith("raw"):  # read by the lean parser: tfds's very records
            stored_records = task.dataset.prepared_builder(str(tmp_path)).as_data_source("val")
            assert type(train).__name__ == "TensorRecords"
            for index in range(len(train)):
                for key, value in stored_records[index].items():
                    assert type(train[index][key]) is type(value)
                    np.testing.assert_array_equal(train[index][key], value)
        loader = pipeline.train_loader(train, task.prepare, 2, 7, 0, task.augment)
        iterator = iter(loader)
        batches[name] = [next(iterator) for _ in range(3)]
        np.testing.assert_array_equal(evaluation[0]["image"], sample["image"])
        np.testing.assert_array_equal(evaluation[0]["label"][..., 0], sample["train_ids"])
    for png, raw in zip(batches["cityscapes"], batches["cityscapes_raw"]):
        assert png.keys() == raw.keys()
        for key in png:
            np.testing.assert_array_equal(png[key], raw[key])


def official_zips(sample, folder) -> None:
    """The sample packed as the official downloads (gtFine holds labelIds, no trainIds)."""
    folder.mkdir()
    root = sample["root"]
    with zipfile.ZipFile(folder / "leftImg8bit_trainvaltest.zip", "w") as z:
        for path in (root / "leftImg8bit").rglob("*.png"):
            z.write(path, path.relative_to(root).as_posix())
    with zipfile.ZipFile(folder / "gtFine_trainvaltest.zip", "w") as z:
        for path in (root / "gtFine").rglob("*.png"):
            if "labelTrainIds" not in path.name:
                z.write(path, path.relative_to(root).as_posix())


def test_official_zips_map_label_ids_to_train_ids(sample, tmp_path):
    official_zips(sample, tmp_path / "downloads")
    prepare.prepare("cityscapes", str(tmp_path / "downloads"), str(tmp_path / "data"))
    label = only_example(tmp_path / "data")["label"][..., 0]
    np.testing.assert_array_equal(label, to_train_ids(sample["label_ids"]))
    # Against the real trainIds file where the downscaled sample's two label files agree (a 3x3
    # neighbourhood uniform in both; see shared/data/README.md): 26,768 pixels.
    def uniform(a):
        return ndimage.maximum_filter(a, 3) == ndimage.minimum_filter(a, 3)
    where = uniform(sample["label_ids"]) & uniform(sample["train_ids"])
    assert where.sum() == 26_768
    np.testing.assert_array_equal(label[where], sample["train_ids"][where])
    assert set(np.unique(label)) <= set(range(19)) | {255}


def test_corrupt_image_is_named_and_missing_downloads_say_what_to_get(sample, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(sample["root"], tree)
    image = next((tree / "leftImg8bit").rglob("*.png"))
    image.write_bytes(b"not a png")
    with pytest.raises(Exception, match=f"{STEM}_leftImg8bit.png"):
        prepare.prepare("cityscapes", str(tree), str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="leftImg8bit_trainvaltest.zip"):
        prepare.prepare("cityscapes", str(tmp_path / "nothing"), str(tmp_path / "data2"))


def test_train_ids_out_of_range_are_named_at_preparation(sample, tmp_path):
    """A labelTrainIds file holding 40 stops `prepare` naming it, not training 100 s later."""
    tree = tmp_path / "tree"
    shutil.copytree(sample["root"], tree)
    label = next((tree / "gtFine").rglob("*_labelTrainIds.png"))
    broken = sample["train_ids"].copy()
    broken[:2, :3] = 40
    cv2.imwrite(str(label), broken)
    with pytest.raises(ValueError, match=r"labelTrainIds.png: label values \[40\] outside "
                                         r"0..18 or 255"):
        prepare.prepare("cityscapes", str(tree), str(tmp_path / "data"))


def test_palette_and_names_cover_the_19_classes():
    assert len(CLASSES) == len(PALETTE) == 19
    assert tuple(PALETTE[CLASSES.index("car")]) == (0, 0, 142)
    assert to_train_ids(np.array([7, 26, 0, 33, 34]))[:4].tolist() == [0, 13, 255, 18]


def test_augmentation_is_deterministic_and_keeps_labels_nearest(sample):
    from hrnet_jax.data.transforms import random_scale_crop_flip, scale_steps

    scales = scale_steps(0.5, 2.1, 0.1)
    assert len(scales) == 17 and scales[0] == 0.5 and scales[-1] == 2.1
    runs = [random_scale_crop_flip(sample["image"], sample["train_ids"], np.random.default_rng(7),
                                   256, scales, (96, 160)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    for seed in range(6):
        image, label = random_scale_crop_flip(sample["image"], sample["train_ids"],
                                              np.random.default_rng(seed), 256, scales, (96, 160))
        assert image.shape == (96, 160, 3) and label.shape == (96, 160)
        # Nearest resampling invents no label values; padding adds only the ignore label.
        assert set(np.unique(label)) <= set(np.unique(sample["train_ids"])) | {255}
    # Scale 0.5 of a 256-wide image is 128x64: padded to the crop with 255 below and right.
    _, label = random_scale_crop_flip(sample["image"], sample["train_ids"],
                                      np.random.default_rng(0), 256, (0.5,), (96, 160), flip=False)
    assert np.all(label[64:] == 255) and np.all(label[:, 128:] == 255)


def test_out_of_range_label_names_the_file():
    from hrnet_jax import experiments
    from hrnet_jax.tasks import make_task

    task = make_task(experiments.load("seg_cityscapes:smoke"))
    example = {"image": np.zeros((4, 4, 3), np.uint8), "label": np.full((4, 4, 1), 19, np.uint8),
               "file_name": b"aachen_000000_000019"}
    with pytest.raises(ValueError, match="aachen_000000_000019: label values \\[19\\]"):
        task.prepare(example)


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
    from hrnet_jax import config as config_lib, experiments
    from hrnet_jax.data import datasets

    config = experiments.load("seg_cityscapes")
    config_lib.apply_override(config, f"data.data_dir={tmp_path}")
    with pytest.raises(FileNotFoundError, match="python -m hrnet_jax.data.prepare cityscapes"):
        datasets.get(config.data.name).sources(config.data)
    # A data_dir holding other datasets says which (tfds's own warnings about it held back).
    for name, version in (("lip", "1.0.0"), ("wflw", "1.1.0")):
        folder = tmp_path / datasets.get(name).tfds_name / version
        folder.mkdir(parents=True)
        (folder / "dataset_info.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"not prepared in .*; it holds lip 1.0.0, wflw "
                                                r"1.1.0\."):
        datasets.get(config.data.name).sources(config.data)


def test_the_libraries_known_noise_is_held_back(caplog):
    from absl import logging as absl_logging

    with caplog.at_level("WARNING"):
        absl_logging.warning("Waiting for previous save to complete took 1.500000 seconds.")
        absl_logging.warning("Variant folder /data/hrnet_lip/1.0.0 has no dataset_info.json")
        absl_logging.warning("something a user should read")
    assert "Waiting" not in caplog.text and "Variant folder" not in caplog.text
    assert "something a user should read" in caplog.text


def test_smoke_run_on_the_real_sample_trains_evaluates_and_draws(sample, tmp_path, capsys):
    import json

    from hrnet_jax.main import main

    prepare.prepare("cityscapes", str(sample["root"]), str(tmp_path / "data"))
    workdir = tmp_path / "run"
    assert main(["--experiment=seg_cityscapes:ohem,smoke", f"--workdir={workdir}",
                 f"--set=data.data_dir={tmp_path / 'data'}"]) == 0
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["split"] == "train"]
    evaluation = [l for l in lines if l["split"] == "eval"]
    assert [l["step"] for l in train] == [2, 4] and all(np.isfinite(l["loss"]) for l in train)
    assert evaluation and 0.0 <= evaluation[-1]["miou"] <= 1.0
    assert "pixel_accuracy" in evaluation[-1]
    # The official all-classes mean counts the absent classes of this 2-image subset as 0.
    occurring = sum(k.startswith("iou/") for k in evaluation[-1])
    assert evaluation[-1]["miou_all_classes"] == pytest.approx(
        evaluation[-1]["miou"] * occurring / len(CLASSES))
    assert any(k.startswith("iou/") and k[4:] in CLASSES for k in evaluation[-1])
    assert len(list((workdir / "pictures").glob("*.png"))) == 1
    # Flip + multi-scale evaluation (scale 1.5 by sliding 64x128 windows) of the same checkpoint.
    assert main(["--experiment=seg_cityscapes:ohem,smoke", f"--workdir={workdir}", "--mode=eval",
                 "--set=eval.flip=true", "--set=eval.scales=0.5,1.0,1.5",
                 f"--set=data.data_dir={tmp_path / 'data'}"]) == 0
    last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "eval" and last["step"] == 4 and 0.0 <= last["miou"] <= 1.0
    # Predict on real images: the colour mask (official palette) and an overlay per image.
    image_dir = sample["root"] / "leftImg8bit" / "val" / "frankfurt"
    out = tmp_path / "predictions"
    assert main(["--experiment=seg_cityscapes:ohem,smoke", f"--workdir={workdir}", "--mode=predict",
                 f"--input={image_dir}", f"--output={out}",
                 f"--set=data.data_dir={tmp_path / 'data'}"]) == 0
    mask = read(out / f"{STEM}_leftImg8bit_mask.png", cv2.IMREAD_COLOR)[..., ::-1]
    overlay = read(out / f"{STEM}_leftImg8bit_overlay.png", cv2.IMREAD_COLOR)
    assert mask.shape == overlay.shape == sample["image"].shape
    colours = {tuple(c) for c in mask.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in PALETTE}
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    assert main(["--experiment=seg_cityscapes:ohem,smoke", f"--workdir={workdir}", "--mode=predict",
                 f"--input={corrupt}", f"--set=data.data_dir={tmp_path / 'data'}"]) == 1
    captured = capsys.readouterr()
    assert f"{corrupt}: not an image or corrupt" in captured.err
    assert "step 4 eval: miou" in captured.out and re.search(r"\n  iou/\w+ +\d\.\d{4}", captured.out)


@pytest.mark.slow
def test_ocr_smoke_run_on_the_real_sample(sample, tmp_path):
    import json

    from hrnet_jax.main import main

    prepare.prepare("cityscapes", str(sample["root"]), str(tmp_path / "data"))
    workdir = tmp_path / "run"
    assert main(["--experiment=seg_cityscapes:ocr,smoke", f"--workdir={workdir}",
                 f"--set=data.data_dir={tmp_path / 'data'}"]) == 0
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert all("aux_loss" in l for l in lines if l["split"] == "train")
    assert lines[-1]["split"] == "eval" and 0.0 <= lines[-1]["miou"] <= 1.0
