"""ImageNet (ILSVRC 2012): 1000 classes, top-1 / top-5 (HRNet classification).

    python -m hrnet_jax.data.prepare imagenet2012 --manual_dir ILSVRC2012_TARS   # tfds's own builder

Prepared by tfds's `imagenet2012` builder from the two official tars (manual download);
evaluated on the 50,000 validation images, resized to 256 and centre-cropped to 224.
"""

from __future__ import annotations

import dataclasses

from hrnet_jax.data.datasets import Dataset

TRAIN_IMAGES = 1281167


@dataclasses.dataclass(frozen=True)
class ImageNet(Dataset):
    def names(self, num_classes: int) -> list[str]:
        """The class names tfds ships, in label order (no optional dependency)."""
        from tensorflow_datasets.datasets.siscore.labels import IMAGENET_LABELS_LIST

        return list(IMAGENET_LABELS_LIST)


IMAGENET = ImageNet(name="imagenet2012", task="classification", tfds_name="imagenet2012",
                    train_examples=TRAIN_IMAGES, eval_split="validation")

DATASETS = (IMAGENET,)
