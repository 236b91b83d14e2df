"""tfds builder `hrnet_face_landmarks/{wflw,300w,cofw,aflw}`: faces with their landmarks.

Two source layouts, found in the manual folder (and its `annotations/`, `images/` subfolders):
- COCO-style json (what mmpose users hold, e.g. `face_landmarks_wflw_train.json`, or
  `test_wflw.json` in shared/data/wflw_mini): images, and annotations with `keypoints`
  (x, y, v triples), `bbox`, and for WFLW/300W the reference's `center` and `scale`;
- the CSV files of HRNet-Facial-Landmark-Detection (`face_landmarks_wflw_test.csv`, ...):
  image_name, scale, [box_size (AFLW),] center_w, center_h, x0, y0, x1, y1, ...
Each file is a split, named by what is left of its name without `face_landmarks` and the
dataset's name (`train`, `test`, `test_blur`, ...).

Records are images with their faces, stored like the pose datasets' persons so the top-down
pipeline reads them: a face's box is the square of side 200 x scale around its centre (from
`center`/`scale` where given, else around the annotated box, side its longer edge), and the
pipeline enlarges it 1.25x as the reference does. `box_size` (AFLW's NME normaliser) comes from
the CSV or the json, else sqrt(w x h) of the annotated box.
"""

from __future__ import annotations

import csv
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from hrnet_jax.data.builders.common import (encoded_rgb, image_with_persons_info,
                                             person_features, read_coco_json)
from hrnet_jax.data.datasets.face_landmarks import DATASETS as _FACES

LANDMARK_SETS = {faces.name: faces.keypoints for faces in _FACES}

INSTRUCTIONS = """\
Put the dataset's images and annotations into one folder: the COCO-style json files of mmpose
(annotations/face_landmarks_<name>_<split>.json, images/) or the CSV files of
HRNet-Facial-Landmark-Detection (face_landmarks_<name>_<split>.csv, images/). Then run
    python -m hrnet_jax.data.prepare wflw --manual_dir FOLDER   # or 300w, cofw, aflw"""


def split_name(stem: str, dataset: str) -> str:
    words = [w for w in stem.split("_") if w not in ("face", "landmarks", dataset)]
    return "_".join(words) or "train"


def square_box(centre: np.ndarray, scale: float) -> list[float]:
    side = 200.0 * scale
    return [centre[0] - side / 2, centre[1] - side / 2, side, side]


def faces_from_json(path: str, num_points: int) -> dict[str, list[dict]]:
    """file name -> its faces {bbox, keypoints (K, 3), box_size}."""
    data = read_coco_json(path, ("image_id", "bbox", "keypoints"))
    names = {image["id"]: image["file_name"] for image in data["images"]}
    by_image: dict[str, list[dict]] = {name: [] for name in names.values()}
    for annotation in data["annotations"]:
        points = np.asarray(annotation["keypoints"], np.float32).reshape(num_points, 3)
        x, y, w, h = annotation["bbox"]
        if "center" in annotation and "scale" in annotation:
            box = square_box(annotation["center"], float(annotation["scale"]))
        else:
            box = square_box([x + w / 2, y + h / 2], max(w, h) / 200.0)
        by_image[names[annotation["image_id"]]].append({
            "bbox": box, "keypoints": points,
            "box_size": float(annotation.get("box_size", np.sqrt(w * h)))})
    return by_image


def faces_from_csv(path: str, num_points: int) -> dict[str, list[dict]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    has_box_size = "box_size" in header
    first_point = 5 if has_box_size else 4
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        values = np.asarray(row[1:], np.float64)
        scale = values[0]
        centre = values[first_point - 3:first_point - 1]
        points = values[first_point - 1:].reshape(num_points, 2)
        keypoints = np.concatenate([points, np.ones((num_points, 1))], -1).astype(np.float32)
        box_size = values[1] if has_box_size else 200.0 * scale
        by_image.setdefault(row[0], []).append(
            {"bbox": square_box(centre, scale), "keypoints": keypoints, "box_size": box_size})
    return by_image


class HrnetFaceLandmarks(tfds.core.GeneratorBasedBuilder):
    """Facial landmarks (WFLW 98, 300W 68, COFW 29, AFLW 19 points): images with their faces."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "COCO-style json or HRNet CSV; one record per image"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=f"{len(points.joints)} points")
                       for name, points in LANDMARK_SETS.items()]

    @property
    def num_points(self) -> int:
        return LANDMARK_SETS[self.builder_config.name].num_joints

    def _info(self) -> tfds.core.DatasetInfo:
        face = person_features(self.num_points, box_size=np.float32)
        return image_with_persons_info(self, face)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        dataset = self.builder_config.name
        folders = [root] + [os.path.join(root, d) for d in ("annotations", "annot")
                            if os.path.isdir(os.path.join(root, d))]
        images = os.path.join(root, "images") if os.path.isdir(os.path.join(root, "images")) else root
        generators = {}
        for folder in folders:
            for name in sorted(os.listdir(folder)):
                stem, suffix = os.path.splitext(name)
                if suffix not in (".json", ".csv") or dataset not in stem.split("_"):
                    continue
                read = faces_from_json if suffix == ".json" else faces_from_csv
                by_image = read(os.path.join(folder, name), self.num_points)
                names = sorted(n for n in by_image if by_image[n])
                split = split_name(stem, dataset)
                self.info.metadata[split] = {"training_persons": [
                    [record, slot] for record, image in enumerate(names)
                    for slot in range(len(by_image[image]))]}
                generators[split] = self._generate_examples(images, names, by_image)
        if not generators:
            raise FileNotFoundError(f"no {dataset} json or csv annotations in {root!r}.\n"
                                    f"{INSTRUCTIONS}")
        return generators

    def _generate_examples(self, folder: str, names: list[str], by_image: dict[str, list[dict]]
                           ) -> Iterator[tuple[int, dict]]:
        for record, name in enumerate(names):
            encoded, _ = encoded_rgb(os.path.join(folder, name))
            faces = by_image[name]
            yield record, {
                "image": encoded, "image_id": record, "file_name": name,
                "persons": {"bbox": np.array([f["bbox"] for f in faces], np.float32).reshape(-1, 4),
                            "keypoints": np.stack([f["keypoints"] for f in faces]),
                            "box_size": np.array([f["box_size"] for f in faces], np.float32)}}
