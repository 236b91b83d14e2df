"""`--mode=predict --input=IMAGE_OR_DIR`: the task's pictures of any image files (segmentation's
colour mask and overlay, pose's skeletons, detection's boxes, classification's top 5)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_boxes(path: str) -> np.ndarray:
    """Person boxes (N, 4) as x, y, w, h from a JSON list of boxes or of COCO detections; boxes
    without area are said and skipped."""
    try:
        with open(path) as f:
            entries = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error}); expected a list of [x, y, w, h] boxes or "
                         "of COCO detections") from None
    try:
        boxes = np.array([e["bbox"] if isinstance(e, dict) else e for e in entries], np.float32)
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: expected a JSON list of [x, y, w, h] boxes or of objects with "
                         f"a 'bbox' ({error})") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{path}: expected boxes of 4 numbers (x, y, w, h), got shape {boxes.shape}")
    empty = np.flatnonzero((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0))
    if len(empty):
        print(f"warning: {path}: skipped {len(empty)} boxes without area (width or height <= 0): "
              + ", ".join(f"#{i} {boxes[i].tolist()}" for i in empty), file=sys.stderr)
    return np.delete(boxes, empty, axis=0)


def read_image(path: str) -> np.ndarray:
    """An image file as uint8 RGB (turned upright by its EXIF orientation), decoded strictly:
    a truncated or corrupt file is a ValueError naming it, never grey pixels."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()  # raises on truncated data (Pillow's LOAD_TRUNCATED_IMAGES is off)
            return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ValueError(f"{path}: not an image or corrupt ({error})") from None


def image_files(path: str) -> list[str]:
    """`path` itself, or the images in the folder `path` (sorted)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    return [path]


def predict_files(trainer: Any, path: str, output: str, boxes_file: str | None = None
                  ) -> tuple[list[str], list[str]]:
    """The task's pictures of every image at `path` (a file or a folder) in `output`, from the
    trainer's latest checkpoint (or the initialisation). `boxes_file`: person boxes for pose, a
    JSON list of [x, y, w, h] or of COCO detections ({"bbox": ...}) of the one image.
    Returns the pictures written and the images that failed ("FILE: why"); a bad image does not
    stop the others."""
    files = image_files(path)
    boxes = read_boxes(boxes_file) if boxes_file else None
    predict = trainer.predict_fn(trainer.restore_or_init())
    os.makedirs(output, exist_ok=True)
    written, failures = [], []
    for file in tqdm(files, desc="predict", unit="image", disable=len(files) < 2):
        try:
            image = read_image(file)
        except ValueError as error:
            failures.append(str(error))
            continue
        stem = os.path.splitext(os.path.basename(file))[0]
        for suffix, picture in trainer.task.render(predict, image, boxes).items():
            target = os.path.join(output, f"{stem}_{suffix}.png")
            cv2.imwrite(target, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            written.append(target)
    return written, failures
