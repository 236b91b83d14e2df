"""Cityscapes: preparation from the official layouts into ArrayRecord, trainId labels."""

from __future__ import annotations

import shutil
import zipfile

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage

from hrnet_jax.data import prepare
from hrnet_jax.data.cityscapes_labels import CLASSES, PALETTE, to_train_ids

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


def test_palette_and_names_cover_the_19_classes():
    assert len(CLASSES) == len(PALETTE) == 19
    assert tuple(PALETTE[CLASSES.index("car")]) == (0, 0, 142)
    assert to_train_ids(np.array([7, 26, 0, 33, 34]))[:4].tolist() == [0, 13, 255, 18]
