"""tfds builder `hrnet_mpii`: MPII Human Pose from the json annotations of the HRNet release.

The manual folder holds `annot/{train,valid}.json` and `images/` (HRNet's layout), or json files
and images side by side (as `shared/data/mpii_mini`); each json file is a split named after it.
An annotation is {image, joints (16 x 2, 1-based), joints_vis, center, scale (x 200 px)}.

Records are images with their persons, as `hrnet_coco_keypoints` stores them, so the same
top-down pipeline reads both. The reference's conventions are applied here, once: 1-based
coordinates become 0-based, the centre moves 15 x scale px down, and the person box is the
square of side 200 x scale around it (the pipeline enlarges it 1.25x).

PCKh needs each person's head size (0.6 x the diagonal of the annotated head box): from
`annot/gt_valid.mat` of the HRNet release (the valid split) or a `headbox` [[x1, y1], [x2, y2]]
per annotation. Without either, the head size is approximated by the distance from upper neck
to head top, and the metadata records it (`exact_head_sizes: false`).
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from hrnet_jax.data.builders.common import encoded_rgb, image_with_persons_info, person_features
from hrnet_jax.data.datasets.mpii import KEYPOINTS as MPII
from hrnet_jax.metrics.pckh import HEAD_SIZE_FACTOR

INSTRUCTIONS = """\
Download the MPII images (mpii_human_pose_v1.tar.gz, http://human-pose.mpi-inf.mpg.de) and the
HRNet json annotations (annot/train.json, valid.json, gt_valid.mat from the HRNet
deep-high-resolution-net release) into one folder holding images/ and annot/. Then run
    python -m hrnet_jax.data.prepare mpii --manual_dir FOLDER [--data_dir DIR]"""

NUM_JOINTS = MPII.num_joints
UPPER_NECK, HEAD_TOP = 8, 9


def person_box(annotation: dict) -> np.ndarray:
    """The square box (x, y, w, h) of the reference's adjusted centre and scale."""
    scale = float(annotation["scale"])
    centre = np.asarray(annotation["center"], np.float64) - 1
    centre[1] += 15 * scale
    side = 200.0 * scale
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side, side], np.float32)


def head_size(annotation: dict, headbox: np.ndarray | None) -> tuple[float, bool]:
    """(head size, whether it comes from a head box)."""
    if headbox is None and "headbox" in annotation:
        headbox = np.asarray(annotation["headbox"], np.float64)
    if headbox is not None:
        return float(np.linalg.norm(headbox[1] - headbox[0]) * HEAD_SIZE_FACTOR), True
    joints = np.asarray(annotation["joints"], np.float64)
    return float(np.linalg.norm(joints[HEAD_TOP] - joints[UPPER_NECK])), False


def _headboxes(folder: str, split: str) -> np.ndarray | None:
    """gt_valid.mat's head boxes (N, 2, 2) for the valid split, in the json's order."""
    path = os.path.join(folder, "gt_valid.mat")
    if split != "valid" or not os.path.exists(path):
        return None
    from scipy.io import loadmat
    return np.transpose(loadmat(path)["headboxes_src"], (2, 0, 1))


class HrnetMpii(tfds.core.GeneratorBasedBuilder):
    """MPII Human Pose: images with their annotated persons (16 joints, head sizes)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "one record per image, training persons in the metadata"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        person = person_features(NUM_JOINTS, head_size=np.float32)
        return image_with_persons_info(self, person, "http://human-pose.mpi-inf.mpg.de")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        annot = os.path.join(root, "annot") if os.path.isdir(os.path.join(root, "annot")) else root
        images = os.path.join(root, "images") if os.path.isdir(os.path.join(root, "images")) else root
        splits = sorted(f[:-5] for f in os.listdir(annot) if f.endswith(".json"))
        if not splits:
            raise FileNotFoundError(f"no MPII json annotations in {annot!r}.\n{INSTRUCTIONS}")
        generators = {}
        for split in splits:
            with open(os.path.join(annot, f"{split}.json")) as f:
                annotations = json.load(f)
            headboxes = _headboxes(annot, split)
            if headboxes is not None and len(headboxes) != len(annotations):
                raise ValueError(f"gt_valid.mat has {len(headboxes)} head boxes for the "
                                 f"{len(annotations)} persons of {split}.json")
            by_image: dict[str, list[dict]] = {}
            for index, annotation in enumerate(annotations):
                size, exact = head_size(annotation, None if headboxes is None else headboxes[index])
                by_image.setdefault(annotation["image"], []).append(
                    {**annotation, "head_size": size, "exact": exact})
            names = sorted(by_image)
            self.info.metadata[split] = {
                "training_persons": [[record, slot] for record, name in enumerate(names)
                                     for slot, person in enumerate(by_image[name])
                                     if max(person["joints_vis"]) > 0],
                "exact_head_sizes": all(p["exact"] for ps in by_image.values() for p in ps)}
            generators[split] = self._generate_examples(images, names, by_image)
        return generators

    def _generate_examples(self, folder: str, names: list[str], by_image: dict[str, list[dict]]
                           ) -> Iterator[tuple[int, dict]]:
        for record, name in enumerate(names):
            encoded, _ = encoded_rgb(os.path.join(folder, name))
            persons = by_image[name]
            keypoints = np.zeros((len(persons), NUM_JOINTS, 3), np.float32)
            for slot, person in enumerate(persons):
                keypoints[slot, :, :2] = np.asarray(person["joints"], np.float32) - 1
                keypoints[slot, :, 2] = np.asarray(person["joints_vis"], np.float32)
            yield record, {
                "image": encoded, "image_id": record, "file_name": name,
                "persons": {"bbox": np.stack([person_box(p) for p in persons]),
                            "keypoints": keypoints,
                            "head_size": np.array([p["head_size"] for p in persons], np.float32)}}
