"""LIP (Look Into Person): single-person human parsing, 20 classes (HRNetV2 semantic
segmentation; 30,462 training and 10,000 validation images).

    python -m hrnet_jax.data.prepare lip --manual_dir LIP   # the extracted LIP tree

Prepared by hrnet_jax.data.builders.lip from `train_images/*.jpg`, `train_segmentations/*.png`,
`val_images/`, `val_segmentations/` and `{train,val}_id.txt`. The reference's protocol (its
lib/datasets/lip.py): every image and label resized to 473x473 first; training mirrors with the
left/right classes swapped (arms 14/15, legs 16/17, shoes 18/19) and the flip test swaps their
scores back; evaluation resizes the scores to the label's own size.
"""

from __future__ import annotations

from hrnet_jax.data.datasets import Dataset

CLASSES = ("background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat",
           "socks", "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm",
           "left-leg", "right-leg", "left-shoe", "right-shoe")
FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))
TRAIN_IMAGES = 30_462

LIP = Dataset(name="lip", task="segmentation", builder=("lip", "HrnetLip"), tfds_name="hrnet_lip",
              class_names=CLASSES, label_flip_pairs=FLIP_PAIRS, train_examples=TRAIN_IMAGES)

DATASETS = (LIP,)
