"""tfds builder `hrnet_coco_person_crops`: COCO's training persons, one record each, as the
loose crop of their image that every training view of them samples.

Training a top-down pose model decodes a whole COCO image (~1.2-1.8 ms of a sample's ~2.8 on
one core) to warp one person out of it. These records store, at preparation, the pixels of the
region any view of the person can sample (`hrnet_jax.data.topdown.loose_region`: every centre,
the largest scale, any rotation, either mirror) raw, with where the region lies in its image:
reading one is a copy. The pixels are exactly those `hrnet_coco_keypoints` gives training (its
stored bytes, decoded as its data source decodes them), and the records come in the order of
its `training_persons`: person i here is person i there, so a seed draws the same batches.

The price is storage: a crop holds more pixels than the person's share of its JPEG (ArrayRecord
compresses the records with zstd), and the region is fixed at preparation for the augmentation
bounds in the metadata (scale factor, aspect ratio): training with a larger scale factor or
another aspect ratio is refused (`hrnet_jax.data.datasets.coco.CocoPersonCrops`).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from hrnet_jax.data import topdown
from hrnet_jax.data.builders.coco_keypoints import (INSTRUCTIONS, NUM_JOINTS, keypoint_files,
                                                    read_annotations, training_persons)
from hrnet_jax.data.builders.common import coco_image
from hrnet_jax.data.datasets.coco import KEYPOINTS as COCO

# The augmentation bounds the regions are cut for: the COCO recipes' scale factor and aspect
# ratio (256x192 and 384x288 alike); rotation needs no bound (a region holds every angle).
SCALE_FACTOR = 0.35
ASPECT_RATIO = 0.75


class HrnetCocoPersonCrops(tfds.core.GeneratorBasedBuilder):
    """COCO 2017 training persons as loose crops, pixels raw."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "one record per training person: its loose crop, pixels raw"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "origin": tfds.features.Tensor(shape=(2,), dtype=np.int32),  # x0, y0
                "image_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),  # height, width
                "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                "keypoints": tfds.features.Tensor(shape=(NUM_JOINTS, 3), dtype=np.float32),
                "image_id": np.int64,
                "person": tfds.features.Tensor(shape=(2,), dtype=np.int32),  # record, slot
            }),
            homepage="https://cocodataset.org", disable_shuffling=True,
            metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root, found = keypoint_files(dl_manager)
        self.info.metadata["augmentation"] = {"scale_factor": SCALE_FACTOR,
                                              "aspect_ratio": ASPECT_RATIO}
        return {split: self._generate_examples(os.path.join(root, folder), *read_annotations(path))
                for split, (path, folder) in found.items()}

    def _generate_examples(self, folder: str, images: list[dict], persons: dict[int, list[dict]]
                           ) -> Iterator[tuple[int, dict]]:
        # The image as hrnet_coco_keypoints stores and its data source decodes it.
        stored = tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
        key = 0
        for record, image in enumerate(images):
            annotations = persons.get(image["id"], [])
            slots = training_persons(image, annotations)
            if not slots:
                continue
            pixels = stored.decode_example_np(stored.encode_example(coco_image(folder, image)))
            height, width = pixels.shape[:2]
            for slot in slots:
                box = np.asarray(annotations[slot]["bbox"], np.float32)
                keypoints = np.asarray(annotations[slot]["keypoints"], np.float32).reshape(-1, 3)
                visible = (keypoints[:, 2] > 0).astype(np.float32)
                x0, y0, x1, y1 = topdown.loose_region(
                    topdown.clean_box(box, width, height), keypoints[:, :2] * visible[:, None],
                    visible, COCO, ASPECT_RATIO, SCALE_FACTOR, width, height)
                yield key, {"image": np.ascontiguousarray(pixels[y0:y1, x0:x1]),
                            "origin": np.array([x0, y0], np.int32),
                            "image_size": np.array([height, width], np.int32),
                            "bbox": box, "keypoints": keypoints, "image_id": image["id"],
                            "person": np.array([record, slot], np.int32)}
                key += 1
