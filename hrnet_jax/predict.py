"""`--mode=predict --input=IMAGE_OR_DIR`: the task's pictures of any image files (segmentation's
colour mask and overlay, pose's skeletons, detection's boxes, classification's top 5). The input,
the boxes file and the output folder may each be local or in a bucket (hrnet_jax.storage)."""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

import numpy as np
from tqdm import tqdm

from hrnet_jax import storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_boxes(path: str) -> np.ndarray:
    """Person boxes (N, 4) as x, y, w, h from a JSON list of boxes or of COCO detections; boxes
    without area are said and skipped."""
    try:
        with storage.errors_named(path, "read"):
            text = storage.path(path).read_text()
        entries = json.loads(text)
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

    with storage.errors_named(path, "read"):
        data = storage.path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()  # raises on truncated data (Pillow's LOAD_TRUNCATED_IMAGES is off)
            upright = ImageOps.exif_transpose(opened)
            if upright.mode.startswith("I"):  # 16-bit grey (Pillow "I;16", "I"): to 8 bits
                return _sixteen_bits_to_rgb(np.asarray(upright), path)
            if upright.mode == "F":
                raise ValueError(f"{path}: a floating-point image; save it with 8 or 16 bits "
                                 "a channel")
            return np.asarray(upright.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ValueError(f"{path}: not an image or corrupt ({error})") from None


def _sixteen_bits_to_rgb(grey: np.ndarray, path: str) -> np.ndarray:
    """A 16-bit grey image as 8-bit RGB, 0..65535 mapped onto 0..255 (what an 8-bit export of
    it holds; converting it as Pillow does clips every value above 255 to white)."""
    if grey.min() < 0 or grey.max() > 65535:
        raise ValueError(f"{path}: grey values {grey.min()}..{grey.max()} outside 16 bits")
    eight = np.round(grey.astype(np.float64) / 257.0).astype(np.uint8)
    return np.repeat(eight[..., None], 3, axis=-1)


def image_files(path: str) -> list[str]:
    """`path` itself, or the images in the folder `path` (sorted)."""
    location = storage.path(path)
    with storage.errors_named(path, "read"):
        folder, exists = location.is_dir(), location.exists()
        files = sorted(os.fspath(child) for child in location.iterdir()
                       if child.name.lower().endswith(IMAGE_SUFFIXES)) if folder else []
    if folder and not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    if not exists:
        raise FileNotFoundError(f"{path} does not exist")
    return files or [os.fspath(location)]


def person_detector(workdir: str) -> "PersonDetector":
    """The persons a trained detection run of this project finds (`--detector=WORKDIR`), or an
    error saying why the run cannot serve (not a run, not a detector, no person class)."""
    from hrnet_jax.predictor import Predictor
    from hrnet_jax.tasks import make_task
    from hrnet_jax.training.workdir import recorded_config

    config = recorded_config(workdir)  # checked before any checkpoint is read
    if config is None:
        raise FileNotFoundError(f"--detector={workdir} holds no run (no config.json)")
    task = make_task(config)
    if not hasattr(task, "person_boxes"):
        raise ValueError(f"--detector={workdir}: a {config.task} run ({config.name}), not a "
                         "detector")
    if "person" not in task.names:
        raise ValueError(f"--detector={workdir}: its classes ({', '.join(task.names[:6])}"
                         f"{', ...' if len(task.names) > 6 else ''}) have no person")
    return PersonDetector(Predictor.from_workdir(workdir))


class PersonDetector:
    """Person boxes (x, y, w, h) of an image: the detector's persons scoring at least
    PERSON_SCORE, as the references' test protocol feeds detections to the pose model."""

    def __init__(self, detector: Any):
        self.detector = detector

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.detector.task.person_boxes(self.detector(image)[0], PERSON_SCORE)


PERSON_SCORE = 0.5  # the detected persons the pose model is run on


def predict_files(trainer: Any, path: str, output: str, boxes_file: str | None = None,
                  detector: str | None = None) -> tuple[list[str], list[str]]:
    """The task's pictures of every image at `path` (a file, a folder of images or frames, or
    a video, written back with the pictures drawn) in `output`, from the trainer's latest
    checkpoint (or the initialisation). Pose's persons: `boxes_file`, a JSON list of
    [x, y, w, h] or of COCO detections ({"bbox": ...}) of the one image; or `detector`, the
    workdir of a detection run whose persons are used in every image; else the whole image.
    Returns the files written and the images that failed ("FILE: why"); a bad image does not
    stop the others."""
    if detector is not None and not hasattr(trainer.task, "predict_persons"):
        raise ValueError(f"--detector finds persons for the pose and landmark experiments, "
                         f"not for {trainer.config.name} ({trainer.task.name})")
    persons = person_detector(detector) if detector else None
    given = read_boxes(boxes_file) if boxes_file else None
    predict = trainer.predict_fn(trainer.restore_or_init())

    def pictures(image: np.ndarray) -> dict[str, np.ndarray]:
        return trainer.task.render(predict, image, persons(image) if persons else given)

    if storage.path(path).suffix.lower() in VIDEO_SUFFIXES:
        return [predict_video(path, output, pictures)], []
    written, failures = [], []
    files = image_files(path)
    for file in tqdm(files, desc="predict", unit="image", disable=len(files) < 2):
        try:
            image = read_image(file)
        except ValueError as error:
            failures.append(str(error))
            continue
        stem = storage.path(file).stem
        try:
            drawn = pictures(image)
        except ValueError as error:  # a picture the task refuses (too large, say), named
            failures.append(f"{file}: {error}")
            continue
        for suffix, picture in drawn.items():
            target = storage.join(output, f"{stem}_{suffix}.png")
            with storage.errors_named(target, "write"):
                storage.write_png(target, picture)
            written.append(target)
    return written, failures


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def predict_video(path: str, output: str, pictures: Any) -> str:
    """A video read frame by frame and written back (`output/STEM_NAME.mp4`) with the task's
    first picture of each frame, with a progress bar; a video that cannot be decoded is named."""
    import cv2

    with storage.local_file(path) as local:
        capture = cv2.VideoCapture(local)
        if not capture.isOpened():
            raise ValueError(f"{path}: cannot be decoded as a video (not a video, or a codec "
                             "OpenCV lacks)")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        writer, target, local_target = None, None, None
        try:
            with tqdm(total=total, desc=f"predict {storage.path(path).name}", unit="frame") as bar:
                while True:
                    read, frame = capture.read()
                    if not read:
                        break
                    name, picture = next(iter(pictures(frame[..., ::-1].copy()).items()))
                    if writer is None:
                        target = storage.join(output, f"{storage.path(path).stem}_{name}.mp4")
                        local_target = target if not storage.is_remote(target) else \
                            os.path.join(storage.cache_folder(output), os.path.basename(target))
                        os.makedirs(os.path.dirname(os.path.abspath(local_target)), exist_ok=True)
                        writer = cv2.VideoWriter(local_target, cv2.VideoWriter_fourcc(*"mp4v"),
                                                 fps, picture.shape[1::-1])
                    writer.write(np.ascontiguousarray(picture[..., ::-1]))
                    bar.update(1)
        finally:
            capture.release()
            if writer is not None:
                writer.release()
    if writer is None:
        raise ValueError(f"{path}: no frame could be decoded")
    if local_target != target:
        storage.copy_file(local_target, target)
    return target
