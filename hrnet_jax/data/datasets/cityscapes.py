"""Cityscapes: urban street scenes, 19 training classes (HRNetV2 semantic segmentation).

    python -m hrnet_jax.data.prepare cityscapes --manual_dir DOWNLOADS   # the two official zips
    python -m hrnet_jax.data.prepare cityscapes_raw --manual_dir DOWNLOADS  # pixels stored raw

Prepared by hrnet_jax.data.builders.cityscapes from `leftImg8bit_trainvaltest.zip` +
`gtFine_trainvaltest.zip` (or the extracted tree): labels are the 19 trainIds (255 = ignore),
read from `*_labelTrainIds.png` where cityscapesScripts wrote them, else mapped from
`*_labelIds.png` with the official table below. Evaluation: mIoU over val's 500 images.
The label definitions are cityscapesScripts' labels.py, as facts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hrnet_jax.data.datasets import Dataset

IGNORE = 255
TRAIN_IMAGES = 2975

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
           "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
           "bus", "train", "motorcycle", "bicycle")

PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)

# labelId -> trainId for the labelIds 7..33 that are trained on; every other id is ignored.
_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
              24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}

LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE, np.uint8)
for _label_id, _train_id in _TRAIN_IDS.items():
    LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id

# The class weights of HRNet-Semantic-Segmentation's Cityscapes loss (shared/DESIGN.md).
CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
                 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507)


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """The official mapping of a labelIds image to trainIds (uint8, 255 = ignore)."""
    return LABEL_ID_TO_TRAIN_ID[np.asarray(label_ids, np.uint8)]


CITYSCAPES = Dataset(name="cityscapes", task="segmentation",
                     builder=("cityscapes", "HrnetCityscapes"), tfds_name="hrnet_cityscapes",
                     class_names=CLASSES, ignore_label=IGNORE,
                     colours=tuple(tuple(int(v) for v in c) for c in PALETTE),
                     train_examples=TRAIN_IMAGES, same_size_images=True)

# The same frames with their pixels stored raw (hrnet_cityscapes_raw): for hosts whose cores the
# PNG decoding of full frames would starve an accelerator of. The same arrays, so the same
# batches; three times the storage. `prepare cityscapes_raw`, then `--set data.name=cityscapes_raw`.
CITYSCAPES_RAW = dataclasses.replace(CITYSCAPES, name="cityscapes_raw",
                                     builder=("cityscapes", "HrnetCityscapesRaw"),
                                     tfds_name="hrnet_cityscapes_raw",
                                     raw_records=True)

DATASETS = (CITYSCAPES, CITYSCAPES_RAW)
