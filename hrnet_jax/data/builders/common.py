"""What the builders share: decoding a file's bytes with the file named in any error, label
images checked against the classes, the record layouts of the segmentation datasets (an image
and its label image) and of the keypoint datasets (an image with its persons or faces), the
COCO tree's files."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import cv2
import numpy as np


def decode(data: bytes, name: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Image bytes -> array (BGR for colour, as OpenCV reads); a clear error naming the file."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ValueError(f"cannot decode {name}: not an image or corrupt")
    return image


def read_label(path: str, num_classes: int) -> np.ndarray:
    """A one-channel label image, every value below `num_classes`; else an error naming the
    file and the values."""
    return checked_label(decode(read_file(path), path, cv2.IMREAD_UNCHANGED), num_classes, path)


def checked_label(label: np.ndarray, num_classes: int, name: str, ignore: int | None = None
                  ) -> np.ndarray:
    """`label` if it is one channel of values below `num_classes` (or `ignore`); else an error
    naming the file and the values, at preparation rather than in training."""
    if label.ndim != 2:
        raise ValueError(f"{name}: a label image has one channel, this one {label.shape[2]}")
    bad = (label >= num_classes) & (label != ignore if ignore is not None else True)
    if bad.any():
        allowed = f"0..{num_classes - 1}" + (f" or {ignore}" if ignore is not None else "")
        raise ValueError(f"{name}: label values {sorted(set(label[bad].tolist()))[:10]} outside "
                         f"{allowed}")
    return label


def segmentation_info(builder: Any, homepage: str, image_format: str = "jpeg") -> Any:
    """DatasetInfo of records holding an image, its (H, W, 1) label image and a file name.
    `image_format` "raw": both stored as their pixels (no codec: reading is a copy)."""
    import tensorflow_datasets as tfds

    if image_format == "raw":
        pixels = lambda channels: tfds.features.Tensor(
            shape=(None, None, channels), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)
        image, label = pixels(3), pixels(1)
    else:
        image = tfds.features.Image(shape=(None, None, 3), encoding_format=image_format)
        label = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    return builder.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"image": image, "label": label,
                                             "file_name": tfds.features.Text()}),
        homepage=homepage)


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing (named by the annotations)") from None


def encoded_rgb(path: str) -> tuple[bytes | np.ndarray, tuple[int, int]]:
    """What a tfds Image feature stores for an image file: its own bytes (checked by decoding
    them), or RGB pixels for a grey image; and the image's (height, width)."""
    data = read_file(path)
    pixels = decode(data, path, cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB), pixels.shape[:2]
    return data, pixels.shape[:2]


def coco_image(folder: str, image: dict) -> bytes | np.ndarray:
    """A COCO `images` entry's picture as a tfds Image feature stores it, its size checked
    against the annotation's."""
    path = os.path.join(folder, image["file_name"])
    encoded, (height, width) = encoded_rgb(path)
    if (height, width) != (image["height"], image["width"]):
        raise ValueError(f"{path}: {width}x{height} pixels, the annotations say "
                         f"{image['width']}x{image['height']}")
    return encoded


def coco_annotation_files(root: str, pattern: str) -> dict[str, tuple[str, str]]:
    """The COCO tree's annotations/NAME_{split}{year}.json files matching `pattern` (a regex
    with groups (split, year)): split -> (json path, image folder such as `val2017`)."""
    folder = os.path.join(root, "annotations")
    if not os.path.isdir(folder):
        return {}
    return {m.group(1): (os.path.join(folder, name), m.group(1) + (m.group(2) or ""))
            for name in sorted(os.listdir(folder)) if (m := re.match(pattern, name))}


def person_features(num_points: int, **extra: Any) -> dict:
    """A person's (face's) features: its box (x, y, w, h), its points (x, y, v), and `extra`."""
    import tensorflow_datasets as tfds

    return {"bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "keypoints": tfds.features.Tensor(shape=(num_points, 3), dtype=np.float32), **extra}


def image_with_persons_info(builder: Any, person: dict, homepage: str = "") -> Any:
    """DatasetInfo of records holding one image and a sequence of `person` features. Records
    keep the order they were generated in (integer keys, shuffling disabled), so that the
    builder's metadata can name them by position (`training_persons`: [record, slot] pairs)."""
    import tensorflow_datasets as tfds

    return builder.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "image_id": np.int64,
            "file_name": tfds.features.Text(),
            "persons": tfds.features.Sequence(person),
        }),
        homepage=homepage, disable_shuffling=True, metadata=tfds.core.MetadataDict())


def read_coco_json(path: str, annotation_keys: tuple[str, ...] = ("image_id", "bbox")) -> dict:
    """A COCO-style annotation file, checked: a file that is not JSON, lacks `images` or
    `annotations`, or holds an image without `id` or an annotation without one of
    `annotation_keys` is a ValueError naming the file and the first such entry."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error.msg} at line {error.lineno}, column "
                         f"{error.colno})") from None
    missing = [key for key in ("images", "annotations")
               if not isinstance(data, dict) or not isinstance(data.get(key), list)]
    if missing:
        raise ValueError(f"{path}: no {' or '.join(missing)} list: not a COCO annotation file")
    for kind, keys in (("images", ("id",)), ("annotations", annotation_keys)):
        for index, entry in enumerate(data[kind]):
            lacking = [key for key in keys if not isinstance(entry, dict) or key not in entry]
            if lacking:
                known = entry.get("id", "?") if isinstance(entry, dict) else "?"
                raise ValueError(f"{path}: {kind}[{index}] (id {known}) has no "
                                 f"{', '.join(lacking)}")
    return data
