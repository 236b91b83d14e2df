"""tfds builder `hrnet_cityscapes`: Cityscapes fine annotations with trainId labels.

tfds's own `cityscapes` builder stores the 34 raw labelIds; training wants the 19 trainIds, so
this builder stores those: from `*_gtFine_labelTrainIds.png` where cityscapesScripts has
written them, else mapped from `*_gtFine_labelIds.png` with the official table. It reads the
official downloads in `manual_dir`, zipped (`leftImg8bit_trainvaltest.zip`,
`gtFine_trainvaltest.zip`) or extracted (`leftImg8bit/`, `gtFine/`).

Preparing needs TensorFlow (tfds encodes with it); reading through `tfds.data_source` does not.
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Iterator

import cv2
import numpy as np
import tensorflow_datasets as tfds

from hrnet_jax.data.builders.common import checked_label, decode, segmentation_info
from hrnet_jax.data.datasets.cityscapes import CLASSES, to_train_ids

ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")
_IMAGE = re.compile(r"leftImg8bit/(train|val|test)/([^/]+)/(\w+)_leftImg8bit\.png$")

INSTRUCTIONS = """\
Download leftImg8bit_trainvaltest.zip (11 GB) and gtFine_trainvaltest.zip (241 MB) from
https://www.cityscapes-dataset.com/downloads/ (free registration) into one folder, then run
    python -m hrnet_jax.data.prepare cityscapes --manual_dir FOLDER [--data_dir DIR]
The folder may instead hold the extracted leftImg8bit/ and gtFine/ trees."""


class _Files:
    """The official files, from the two zips or from the extracted tree."""

    def __init__(self, root: str):
        self.root = root
        zips = [os.path.join(root, z) for z in ZIPS]
        if all(os.path.exists(z) for z in zips):
            self.archives = [zipfile.ZipFile(z) for z in zips]
            self.names = [n for a in self.archives for n in a.namelist()]
        elif os.path.isdir(os.path.join(root, "leftImg8bit")) and os.path.isdir(os.path.join(root, "gtFine")):
            self.archives = []
            self.names = [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                          for top in ("leftImg8bit", "gtFine")
                          for d, _, files in os.walk(os.path.join(root, top)) for f in files]
        else:
            raise FileNotFoundError(f"no Cityscapes downloads in {root!r}.\n{INSTRUCTIONS}")
        self.present = set(self.names)

    def read(self, name: str) -> bytes:
        for archive in self.archives:
            if name in archive.NameToInfo:
                return archive.read(name)
        with open(os.path.join(self.root, name), "rb") as f:
            return f.read()


class HrnetCityscapes(tfds.core.GeneratorBasedBuilder):
    """Cityscapes fine: images and 19-class trainId labels (255 = ignore)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "trainId labels, from zips or the extracted tree"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return segmentation_info(self, "https://www.cityscapes-dataset.com", image_format="png")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        files = _Files(os.fspath(dl_manager.manual_dir))
        splits = sorted({m.group(1) for n in files.names if (m := _IMAGE.search(n))} - {"test"})
        return {split: self._generate_examples(files, split) for split in splits}

    def _generate_examples(self, files: _Files, split: str) -> Iterator[tuple[str, dict]]:
        for name in sorted(files.names):
            match = _IMAGE.search(name)
            if not match or match.group(1) != split:
                continue
            _, city, stem = match.groups()
            gt = f"gtFine/{split}/{city}/{stem}_gtFine_"
            if gt + "labelTrainIds.png" in files.present:
                label = checked_label(decode(files.read(gt + "labelTrainIds.png"),
                                             gt + "labelTrainIds.png", cv2.IMREAD_UNCHANGED),
                                      len(CLASSES), gt + "labelTrainIds.png", ignore=255)
            elif gt + "labelIds.png" in files.present:
                label = to_train_ids(decode(files.read(gt + "labelIds.png"), gt + "labelIds.png",
                                             cv2.IMREAD_UNCHANGED))
            else:
                raise FileNotFoundError(f"{name}: no {gt}labelIds.png (is gtFine_trainvaltest.zip "
                                        "complete?)")
            image = decode(files.read(name), name, cv2.IMREAD_COLOR)
            if image.shape[:2] != label.shape[:2]:
                raise ValueError(f"{name}: image {image.shape[:2]} and label {label.shape[:2]} "
                                 "differ in size")
            yield stem, {"image": cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
                         "label": label[..., None].astype(np.uint8), "file_name": stem}


class HrnetCityscapesRaw(HrnetCityscapes):
    """The same records with their pixels stored raw and uncompressed (8.4 MB a frame with its
    label; `Dataset.raw_records`): decoding a 1024x2048 frame's PNGs took ~35 ms of a training
    sample's ~46 on one core, reading the raw record ~4. The price is storage: ~4x the PNGs'
    (~29 GB for train and val)."""

    RELEASE_NOTES = {"1.0.0": "hrnet_cityscapes's records, pixels stored raw"}

    def _info(self) -> tfds.core.DatasetInfo:
        return segmentation_info(self, "https://www.cityscapes-dataset.com", image_format="raw")
