"""tfds builder `hrnet_lip`: LIP human parsing from the extracted tree.

The manual folder holds `{split}_id.txt` (one image id a line), `{split}_images/ID.jpg` and
`{split}_segmentations/ID.png` for split train and val; the official archives' nesting
(`TrainVal_images/`, `TrainVal_parsing_annotations/`) is found too. Grey JPEGs (LIP has some)
are stored as RGB. Labels are checked here, once: a value above 19 names its file.
"""

from __future__ import annotations

import os
from typing import Iterator

import tensorflow_datasets as tfds

from hrnet_jax.data.builders.common import encoded_rgb, read_label, segmentation_info
from hrnet_jax.data.datasets.lip import CLASSES

INSTRUCTIONS = """\
Download LIP's TrainVal_images.zip and TrainVal_parsing_annotations.zip
(https://www.sysu-hcp.net/lip/) and extract them into one folder, so that it holds
train_images/, train_segmentations/, val_images/, val_segmentations/, train_id.txt and
val_id.txt (directly or inside TrainVal_images/ and TrainVal_parsing_annotations/). Then run
    python -m hrnet_jax.data.prepare lip --manual_dir FOLDER [--data_dir DIR]"""

SPLITS = ("train", "val")


def find(root: str, name: str) -> str | None:
    """`name` in the root or in one of the official archives' top folders."""
    for folder in ("", "TrainVal_images", "TrainVal_parsing_annotations"):
        path = os.path.join(root, folder, name)
        if os.path.exists(path):
            return path
    return None


class HrnetLip(tfds.core.GeneratorBasedBuilder):
    """LIP: images and 20-class parsing labels (0 = background)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "the extracted LIP tree"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return segmentation_info(self, "https://www.sysu-hcp.net/lip/")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        splits = {split: find(root, f"{split}_id.txt") for split in SPLITS}
        if not any(splits.values()):
            raise FileNotFoundError(f"no LIP train_id.txt or val_id.txt in {root!r}.\n{INSTRUCTIONS}")
        return {split: self._generate_examples(root, split, ids)
                for split, ids in splits.items() if ids}

    def _generate_examples(self, root: str, split: str, ids_file: str
                           ) -> Iterator[tuple[str, dict]]:
        with open(ids_file) as f:
            ids = [line.strip() for line in f if line.strip()]
        for image_id in ids:
            image_path = find(root, f"{split}_images/{image_id}.jpg")
            label_path = find(root, f"{split}_segmentations/{image_id}.png")
            if image_path is None or label_path is None:
                missing = "image" if image_path is None else "label"
                raise FileNotFoundError(f"{ids_file} lists {image_id!r}, which has no {missing} "
                                        f"({split}_images/{image_id}.jpg, "
                                        f"{split}_segmentations/{image_id}.png)")
            image, size = encoded_rgb(image_path)
            label = read_label(label_path, len(CLASSES))
            if label.shape != size:
                raise ValueError(f"{image_path}: image {size} and label {label.shape} differ in size")
            yield image_id, {"image": image, "label": label[..., None], "file_name": image_id}
