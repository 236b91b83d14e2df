"""tfds builder `hrnet_pascal_context`: PASCAL-Context labels (60-class, 0 = background).

The manual folder is VOC2010 (or a folder holding `VOCdevkit/VOC2010` or `VOC2010`) with
`JPEGImages/`, and either
- the official annotations `trainval_merged.json` (PASCAL in Detail; in VOC2010 or the folder
  given): its `images` (image_id, file_name, height, width, phase train/val) and
  `annos_segmentation` (image_id, category_id, COCO RLE `segmentation`), painted in file order
  into a category mask as the Detail API's getMask does, then mapped to labels; read directly,
  without the unmaintained `detail` package;
- or mmsegmentation's converted layout: `SegmentationClassContext/ID.png` (labels 0..59) listed
  by `ImageSets/SegmentationContext/{train,val}.txt`.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from hrnet_jax.data.builders.common import encoded_rgb, read_label, segmentation_info
from hrnet_jax.data.datasets.pascal_context import CLASSES_60, to_context_labels

INSTRUCTIONS = """\
Download VOC2010 (VOCtrainval_03-May-2010.tar, http://host.robots.ox.ac.uk/pascal/VOC/voc2010/)
and the PASCAL-Context annotations trainval_merged.json (https://cs.stanford.edu/~roozbeh/pascal-context/,
the PASCAL in Detail release) into VOCdevkit/VOC2010, or convert it with mmsegmentation
(SegmentationClassContext/ + ImageSets/SegmentationContext/). Then run
    python -m hrnet_jax.data.prepare pascal_context --manual_dir VOCdevkit/VOC2010 [--data_dir DIR]"""

SPLITS = ("train", "val")
JSON_NAME = "trainval_merged.json"


def voc_root(folder: str) -> str:
    for candidate in (folder, os.path.join(folder, "VOC2010"),
                      os.path.join(folder, "VOCdevkit", "VOC2010")):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise FileNotFoundError(f"no VOC2010 JPEGImages/ in {folder!r}.\n{INSTRUCTIONS}")


def category_mask(image: dict, annotations: list[dict]) -> np.ndarray:
    """The Detail API's semantic mask of one image: zeros, each annotation's pixels set to its
    category id in file order."""
    from pycocotools import mask as mask_utils

    height, width = image["height"], image["width"]
    mask = np.zeros((height, width), np.int64)
    for annotation in annotations:
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):  # polygons
            segmentation = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            segmentation = mask_utils.frPyObjects(segmentation, height, width)
        mask[mask_utils.decode(segmentation) > 0] = annotation["category_id"]
    return mask


class HrnetPascalContext(tfds.core.GeneratorBasedBuilder):
    """PASCAL-Context: VOC2010 images and 60-class labels (0 = background)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "from trainval_merged.json or mmsegmentation's PNG labels"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return segmentation_info(self, "https://cs.stanford.edu/~roozbeh/pascal-context/")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        folder = os.fspath(dl_manager.manual_dir)
        root = voc_root(folder)
        for json_path in (os.path.join(root, JSON_NAME), os.path.join(folder, JSON_NAME)):
            if os.path.exists(json_path):
                with open(json_path) as f:
                    detail = json.load(f)
                return {split: self._generate_examples(self._from_detail(root, detail, split,
                                                                         json_path))
                        for split in SPLITS}
        lists = {split: os.path.join(root, "ImageSets", "SegmentationContext", f"{split}.txt")
                 for split in SPLITS}
        if not os.path.isdir(os.path.join(root, "SegmentationClassContext")) or \
                not any(os.path.exists(p) for p in lists.values()):
            raise FileNotFoundError(f"neither {JSON_NAME} nor SegmentationClassContext/ with "
                                    f"ImageSets/SegmentationContext/ in {root!r}.\n{INSTRUCTIONS}")
        return {split: self._generate_examples(self._from_pngs(root, path))
                for split, path in lists.items() if os.path.exists(path)}

    def _generate_examples(self, examples: Iterator[tuple[str, dict]]
                           ) -> Iterator[tuple[str, dict]]:
        yield from examples

    def _from_detail(self, root: str, detail: dict, split: str, json_path: str
                     ) -> Iterator[tuple[str, dict]]:
        by_image = collections.defaultdict(list)
        for annotation in detail["annos_segmentation"]:
            by_image[annotation["image_id"]].append(annotation)
        for image in detail["images"]:
            if image["phase"] != split:
                continue
            name = image["file_name"]
            if not by_image.get(image["image_id"]):
                raise ValueError(f"{json_path} has no segmentation annotation for image {name} "
                                 f"(image_id {image['image_id']})")
            try:
                label = to_context_labels(category_mask(image, by_image[image["image_id"]]))
            except ValueError as error:
                raise ValueError(f"{name} (image_id {image['image_id']}): {error}") from None
            yield self._example(root, os.path.splitext(name)[0], label)

    def _from_pngs(self, root: str, list_path: str) -> Iterator[tuple[str, dict]]:
        with open(list_path) as f:
            ids = [line.strip() for line in f if line.strip()]
        for image_id in ids:
            label_path = os.path.join(root, "SegmentationClassContext", f"{image_id}.png")
            if not os.path.exists(label_path):
                raise FileNotFoundError(f"{list_path} lists {image_id!r}, which has no label "
                                        f"{label_path}")
            yield self._example(root, image_id, read_label(label_path, len(CLASSES_60)))

    def _example(self, root: str, image_id: str, label: np.ndarray) -> tuple[str, dict]:
        path = os.path.join(root, "JPEGImages", f"{image_id}.jpg")
        image, size = encoded_rgb(path)
        if label.shape != size:
            raise ValueError(f"{path}: image {size} and label {label.shape} differ in size")
        return image_id, {"image": image, "label": label[..., None], "file_name": image_id}
