"""PASCAL-Context: whole-scene labels of PASCAL VOC 2010 (4,998 training and 5,105 validation
images), in the 59-class setting (background ignored) or the 60-class one (background a class).

    python -m hrnet_jax.data.prepare pascal_context --manual_dir VOCdevkit/VOC2010

Prepared by hrnet_jax.data.builders.pascal_context, once for both settings, from the official
sources (`JPEGImages/` + the PASCAL in Detail annotations `trainval_merged.json`) or from
mmsegmentation's converted layout (`SegmentationClassContext/*.png` +
`ImageSets/SegmentationContext/{train,val}.txt`). The stored labels are the 60-class ones: 0 =
background, 1..59 the categories below in order of their Detail API ids (459-category space),
as the official code's `_class_to_index`. The 59-class setting reads them with
`reduce_zero_label` (0 -> ignore, k -> k - 1).
"""

from __future__ import annotations

import numpy as np

from hrnet_jax.data.datasets import Dataset

# (Detail API category id, name) of the 59 categories, in label order (ids ascending).
CATEGORIES = (
    (2, "aeroplane"), (9, "bag"), (18, "bed"), (19, "bedclothes"), (22, "bench"),
    (23, "bicycle"), (25, "bird"), (31, "boat"), (33, "book"), (34, "bottle"), (44, "building"),
    (45, "bus"), (46, "cabinet"), (59, "car"), (65, "cat"), (68, "ceiling"), (72, "chair"),
    (80, "cloth"), (85, "computer"), (98, "cow"), (104, "cup"), (105, "curtain"), (113, "dog"),
    (115, "door"), (144, "fence"), (158, "floor"), (159, "flower"), (162, "food"),
    (187, "grass"), (189, "ground"), (207, "horse"), (220, "keyboard"), (232, "light"),
    (258, "motorbike"), (259, "mountain"), (260, "mouse"), (284, "person"), (295, "plate"),
    (296, "platform"), (308, "pottedplant"), (324, "road"), (326, "rock"), (347, "sheep"),
    (349, "shelves"), (354, "sidewalk"), (355, "sign"), (360, "sky"), (366, "snow"),
    (368, "sofa"), (397, "table"), (415, "track"), (416, "train"), (420, "tree"),
    (424, "truck"), (427, "tvmonitor"), (440, "wall"), (445, "water"), (454, "window"),
    (458, "wood"))
CLASSES_59 = tuple(name for _, name in CATEGORIES)
CLASSES_60 = ("background",) + CLASSES_59
TRAIN_IMAGES = 4998

# Detail category id -> stored label; ids outside the 59 (and background 0) have none (-1).
LABEL_OF_CATEGORY = np.full(460, -1, np.int16)
LABEL_OF_CATEGORY[0] = 0
for _label, (_category, _) in enumerate(CATEGORIES, start=1):
    LABEL_OF_CATEGORY[_category] = _label


def to_context_labels(category_mask: np.ndarray) -> np.ndarray:
    """A Detail semantic mask (category ids, 0 = background) -> stored labels (uint8 0..59).
    Raises ValueError listing ids that are not among the 59 categories."""
    ids = np.asarray(category_mask, np.int64)
    inside = (ids >= 0) & (ids < len(LABEL_OF_CATEGORY))
    labels = np.where(inside, LABEL_OF_CATEGORY[np.clip(ids, 0, len(LABEL_OF_CATEGORY) - 1)], -1)
    if (labels < 0).any():
        raise ValueError(f"category ids {sorted(set(ids[labels < 0].tolist()))[:10]} are not "
                         "PASCAL-Context categories")
    return labels.astype(np.uint8)


_COMMON = dict(task="segmentation", builder=("pascal_context", "HrnetPascalContext"),
               tfds_name="hrnet_pascal_context", train_examples=TRAIN_IMAGES)
PASCAL_CONTEXT = Dataset(name="pascal_context", class_names=CLASSES_59, reduce_zero_label=True,
                         **_COMMON)
PASCAL_CONTEXT60 = Dataset(name="pascal_context60", class_names=CLASSES_60, **_COMMON)

DATASETS = (PASCAL_CONTEXT, PASCAL_CONTEXT60)
