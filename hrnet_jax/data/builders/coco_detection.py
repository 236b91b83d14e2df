"""tfds builder `hrnet_coco_detection`: COCO object boxes and instance masks, one record per image.

The manual folder is the official tree: `annotations/instances_{train,val}2017.json` and
`{train,val}2017/*.jpg`. Where a split has no instances file, its `person_keypoints_*.json`
serves (person boxes only: the keypoint samples, e.g. shared/data/coco_mini). A record holds
the image and every box of it (crowds too: the official evaluation ignores detections on them)
with the contiguous label of hrnet_jax.data.datasets.coco. Records keep image-id order, so the
builder's metadata can name, per split, the records that train (some non-crowd box of at least
1x1 pixel: FCOS's selection) and those in portrait orientation (batches are grouped by
orientation so that they pad to one shape). Each object's mask is kept as COCO's compressed RLE
string (polygons and uncompressed crowd RLE converted with pycocotools); an annotation without
a polygon of three points is named in a warning and keeps its box with an empty mask.

COCO-stuff's label maps (HTC's semantic branch): where the manual folder holds
`stuffthingmaps/{train,val}2017/NAME.png` beside the images, each record keeps its image's map
(`semantic`: 0..181 things and stuff, 255 unlabelled) and the split's metadata says so; a
split without the folder stores a 1x1 placeholder, and HTC's training names the missing folder.
A map of another size than its image, or with labels outside the 183 classes, is named in a
warning and stored unlabelled (all 255): that image trains without a semantic loss, nothing
else is lost.
"""

from __future__ import annotations

import os
import warnings
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from hrnet_jax.data.datasets import coco
from hrnet_jax.data.builders.common import coco_annotation_files, coco_image, read_coco_json
from hrnet_jax.data.detection import instance_rle

INSTRUCTIONS = """\
Download the 2017 images (train2017.zip, val2017.zip) and annotations_trainval2017.zip from
https://cocodataset.org/#download and extract them into one folder, which then holds
annotations/instances_{train,val}2017.json and train2017/, val2017/. Then run
    python -m hrnet_jax.data.prepare coco_detection --manual_dir FOLDER [--data_dir DIR]"""

_INSTANCES = r"instances_(\w+?)(\d{4})?\.json$"
STUFF_FOLDER = "stuffthingmaps"
SEMANTIC_CLASSES, UNLABELLED = 183, 255
NO_MAP = np.zeros((1, 1, 1), np.uint8)  # a split prepared without COCO-stuff
_PERSONS = r"person_keypoints_(\w+?)(\d{4})?\.json$"


def read_annotations(path: str) -> tuple[list[dict], dict[int, list[dict]]]:
    """(images sorted by id, image id -> its annotations in file order). What cannot train is
    named with its image in a warning and the rest kept: an annotation of a category outside
    COCO's 80 is left out; a box under 1x1 pixel stays (for the evaluation) but does not train."""
    data = read_coco_json(path, ("image_id", "bbox", "category_id"))
    names = {image["id"]: image.get("file_name", f"image {image['id']}")
             for image in data["images"]}
    objects: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        name = names.get(annotation["image_id"], f"image {annotation['image_id']}")
        if annotation["category_id"] not in coco.LABEL_OF_ID:
            warnings.warn(f"{path}: {name}: annotation {annotation.get('id')} has category id "
                          f"{annotation['category_id']}, not one of COCO's 80 detection "
                          "categories: left out")
            continue
        width, height = annotation["bbox"][2:]
        if not annotation.get("iscrowd", 0) and (width < 1 or height < 1):
            warnings.warn(f"{path}: {name}: annotation {annotation.get('id')} has a "
                          f"{width}x{height} box (under 1x1 pixel): kept for evaluation, left "
                          "out of training")
        objects.setdefault(annotation["image_id"], []).append(annotation)
    return sorted(data["images"], key=lambda image: image["id"]), objects


def trains(annotations: list[dict]) -> bool:
    return any(not a.get("iscrowd", 0) and a["bbox"][2] >= 1 and a["bbox"][3] >= 1
               for a in annotations)


class HrnetCocoDetection(tfds.core.GeneratorBasedBuilder):
    """COCO 2017 detection: images with all their boxes."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "one record per image; training and portrait records in the metadata",
                     "1.1.0": "instance masks as compressed RLE strings",
                     "1.2.0": "COCO-stuff label maps (stuffthingmaps/) where the folder exists"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "image_id": np.int64,
                "file_name": tfds.features.Text(),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),  # x, y, w, h
                    "label": np.int64, "area": np.float32, "iscrowd": np.int32,
                    "mask": tfds.features.Text()}),  # compressed RLE; "" for none
                "semantic": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            }),
            homepage="https://cocodataset.org", disable_shuffling=True,
            metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        found = {**coco_annotation_files(root, _PERSONS), **coco_annotation_files(root, _INSTANCES)}
        if not found:
            raise FileNotFoundError(f"no annotations/instances_*.json in {root!r}.\n{INSTRUCTIONS}")
        generators = {}
        for split, (path, image_folder) in found.items():
            images, objects = read_annotations(path)
            stuff = os.path.join(root, STUFF_FOLDER, image_folder)
            self.info.metadata[split] = {
                "semantic_labels": os.path.isdir(stuff),
                "training_records": [record for record, image in enumerate(images)
                                     if trains(objects.get(image["id"], []))],
                "portrait_records": [record for record, image in enumerate(images)
                                     if image["height"] > image["width"]]}
            generators[split] = self._generate_examples(
                os.path.join(root, image_folder), images, objects,
                stuff if os.path.isdir(stuff) else None)
        return generators

    def _generate_examples(self, folder: str, images: list[dict], objects: dict[int, list[dict]],
                           stuff: str | None) -> Iterator[tuple[int, dict]]:
        for record, image in enumerate(images):
            annotations = objects.get(image["id"], [])
            yield record, {
                "image": coco_image(folder, image),
                "semantic": NO_MAP if stuff is None else semantic_map(stuff, image),
                "image_id": image["id"], "file_name": image["file_name"],
                "objects": {
                    "bbox": np.array([a["bbox"] for a in annotations], np.float32).reshape(-1, 4),
                    "label": np.array([coco.LABEL_OF_ID[a["category_id"]]
                                       for a in annotations], np.int64),
                    "area": np.array([a["area"] for a in annotations], np.float32),
                    "iscrowd": np.array([a.get("iscrowd", 0) for a in annotations], np.int32),
                    "mask": [self._mask(a, image) for a in annotations]}}

    @staticmethod
    def _mask(annotation: dict, image: dict) -> str:
        rle = instance_rle(annotation.get("segmentation", []), image["height"], image["width"])
        if not rle:
            warnings.warn(f"{image['file_name']}: annotation {annotation.get('id')} has no "
                          "polygon of three points or more: its box is kept, its mask is empty")
        return rle


def semantic_map(folder: str, image: dict) -> np.ndarray:
    """An image's COCO-stuff label map (H, W, 1) uint8 from `folder`; unlabelled (all 255),
    with a warning naming the file, where it is missing, of another size than the image, or
    holds labels outside the 183 classes."""
    import cv2

    path = os.path.join(folder, os.path.splitext(image["file_name"])[0] + ".png")
    unlabelled = np.full((image["height"], image["width"], 1), UNLABELLED, np.uint8)
    labels = cv2.imread(path, cv2.IMREAD_UNCHANGED) if os.path.exists(path) else None
    if labels is None:
        problem = "missing or not a PNG"
    elif labels.ndim != 2 or labels.dtype != np.uint8:
        problem = f"a {labels.dtype} map of shape {labels.shape}, not one 8-bit channel"
    elif labels.shape != (image["height"], image["width"]):
        problem = (f"{labels.shape[1]}x{labels.shape[0]} pixels, its image "
                   f"{image['width']}x{image['height']}")
    elif ((labels >= SEMANTIC_CLASSES) & (labels != UNLABELLED)).any():
        bad = sorted(set(np.unique(labels[(labels >= SEMANTIC_CLASSES)
                                          & (labels != UNLABELLED)]).tolist()))
        problem = (f"labels {bad[:5]} outside COCO-stuff's {SEMANTIC_CLASSES} classes "
                   f"(0..{SEMANTIC_CLASSES - 1}, {UNLABELLED} unlabelled)")
    else:
        return labels[..., None]
    warnings.warn(f"{path}: {problem}: its image trains without semantic labels")
    return unlabelled
