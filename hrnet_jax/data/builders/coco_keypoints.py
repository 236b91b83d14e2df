"""tfds builder `hrnet_coco_keypoints`: COCO person keypoints, one record per image.

A record holds an image and every person annotation of it (crowds and unlabelled persons too:
the official evaluation needs them). Records are stored in image-id order (shuffling disabled),
so that the builder's metadata can list, per split, the (record, person) pairs that train: not
crowd, some keypoint labelled, a non-empty box — the HRNet reference's selection. Training reads
persons through `hrnet_jax.data.topdown.PersonInstances`; evaluation reads images.

The manual folder is the official tree: `annotations/person_keypoints_{train,val}2017.json` and
`{train,val}2017/*.jpg`. Images keep their original JPEG bytes (checked by decoding them).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from hrnet_jax.data.builders.common import (coco_annotation_files, coco_image, read_coco_json,
                                            image_with_persons_info, person_features)
from hrnet_jax.data.datasets.coco import KEYPOINTS as COCO
from hrnet_jax.data.topdown import is_training_person

INSTRUCTIONS = """\
Download the 2017 images (train2017.zip, val2017.zip) and annotations_trainval2017.zip from
https://cocodataset.org/#download and extract them into one folder, which then holds
annotations/person_keypoints_{train,val}2017.json and train2017/, val2017/. Then run
    python -m hrnet_jax.data.prepare coco_keypoints --manual_dir FOLDER [--data_dir DIR]
Evaluation with detected boxes (the paper's protocol) also needs the person detections of the
HRNet repository, person_detection_results/COCO_val2017_detections_AP_H_56_person.json."""

_ANNOTATIONS = r"person_keypoints_(\w+?)(\d{4})?\.json$"
NUM_JOINTS = COCO.num_joints


def training_persons(image: dict, persons: list[dict]) -> list[int]:
    """Slots of the persons that train (the reference's `_load_coco_keypoint_annotation`)."""
    return [slot for slot, p in enumerate(persons)
            if is_training_person(np.asarray(p["bbox"]), np.asarray(p["keypoints"]), p["area"],
                                  p.get("iscrowd", 0), image["width"], image["height"])]


def read_annotations(path: str) -> tuple[list[dict], dict[int, list[dict]]]:
    """(images sorted by id, image id -> its person annotations in file order)."""
    data = read_coco_json(path, ("image_id", "bbox", "keypoints"))
    persons: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        if annotation.get("category_id", 1) == 1:
            persons.setdefault(annotation["image_id"], []).append(annotation)
    return sorted(data["images"], key=lambda image: image["id"]), persons


def keypoint_files(dl_manager: tfds.download.DownloadManager
                   ) -> tuple[str, dict[str, tuple[str, str]]]:
    """The manual folder and its splits' (annotation file, image folder); an error saying what
    to download when it holds none."""
    root = os.fspath(dl_manager.manual_dir)
    found = coco_annotation_files(root, _ANNOTATIONS)
    if not found:
        raise FileNotFoundError(f"no annotations/person_keypoints_*.json in {root!r}.\n"
                                f"{INSTRUCTIONS}")
    return root, found


class HrnetCocoKeypoints(tfds.core.GeneratorBasedBuilder):
    """COCO 2017 person keypoints: images with all their person annotations."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "one record per image, training persons in the metadata"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        person = person_features(NUM_JOINTS, area=np.float32, iscrowd=np.int32,
                                 num_keypoints=np.int32)
        return image_with_persons_info(self, person, "https://cocodataset.org")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root, found = keypoint_files(dl_manager)
        generators = {}
        for split, (path, image_folder) in found.items():
            images, persons = read_annotations(path)
            self.info.metadata[split] = {"training_persons": [
                [record, slot] for record, image in enumerate(images)
                for slot in training_persons(image, persons.get(image["id"], []))]}
            generators[split] = self._generate_examples(os.path.join(root, image_folder),
                                                        images, persons)
        return generators

    def _generate_examples(self, folder: str, images: list[dict], persons: dict[int, list[dict]]
                           ) -> Iterator[tuple[int, dict]]:
        for record, image in enumerate(images):
            annotations = persons.get(image["id"], [])
            yield record, {
                "image": coco_image(folder, image),
                "image_id": image["id"], "file_name": image["file_name"],
                "persons": {
                    "bbox": np.array([a["bbox"] for a in annotations], np.float32).reshape(-1, 4),
                    "keypoints": np.array([a["keypoints"] for a in annotations],
                                          np.float32).reshape(-1, NUM_JOINTS, 3),
                    "area": np.array([a["area"] for a in annotations], np.float32),
                    "iscrowd": np.array([a.get("iscrowd", 0) for a in annotations], np.int32),
                    "num_keypoints": np.array([a.get("num_keypoints", 0) for a in annotations],
                                              np.int32)}}

