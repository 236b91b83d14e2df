"""Facial landmarks: WFLW (98 points), 300W (68), COFW (29), AFLW (19); NME (HRNetV2).

    python -m hrnet_jax.data.prepare wflw --manual_dir WFLW   # or 300w, cofw, aflw

Prepared by hrnet_jax.data.builders.face_landmarks from mmpose's COCO-style json or the HRNet
release's CSV files: one record per image with its faces. Training takes one face at a time
(scale and rotation drawn uniformly, the reference's recipe); evaluation predicts in every face
box and reports the NME normalised as each dataset's protocol says (below), the failure rate at
0.1 and the AUC. The mirror pairs are HRNet-Facial-Landmark-Detection's MATCHED_PARTS.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hrnet_jax.data.datasets import PersonDataset
from hrnet_jax.data.keypoint_sets import KeypointSet


def _chain(*runs: range) -> tuple[tuple[int, int], ...]:
    """Consecutive points joined into polylines (face outlines)."""
    return tuple((i, i + 1) for run in runs for i in run[:-1])


WFLW_POINTS = KeypointSet(
    name="wflw", joints=tuple(f"p{i}" for i in range(98)),
    flip_pairs=(*((i, 32 - i) for i in range(16)), (33, 46), (34, 45), (35, 44), (36, 43),
                (37, 42), (38, 50), (39, 49), (40, 48), (41, 47), (60, 72), (61, 71), (62, 70),
                (63, 69), (64, 68), (65, 75), (66, 74), (67, 73), (55, 59), (56, 58), (76, 82),
                (77, 81), (78, 80), (87, 83), (86, 84), (88, 92), (89, 91), (95, 93), (96, 97)),
    limbs=_chain(range(0, 33), range(33, 38), range(42, 47), range(51, 55), range(55, 60),
                 range(60, 68), range(68, 76), range(76, 88), range(88, 96)),
    upper_body=())
POINTS_300W = KeypointSet(
    name="300w", joints=tuple(f"p{i}" for i in range(68)),
    flip_pairs=(*((i, 16 - i) for i in range(8)), (17, 26), (18, 25), (19, 24), (20, 23),
                (21, 22), (31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47),
                (41, 46), (48, 54), (49, 53), (50, 52), (61, 63), (60, 64), (67, 65), (59, 55),
                (58, 56)),
    limbs=_chain(range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36),
                 range(36, 42), range(42, 48), range(48, 60), range(60, 68)),
    upper_body=())
COFW_POINTS = KeypointSet(
    name="cofw", joints=tuple(f"p{i}" for i in range(29)),
    flip_pairs=((0, 1), (4, 6), (2, 3), (5, 7), (8, 9), (10, 11), (12, 14), (16, 17), (13, 15),
                (18, 19), (22, 23)),
    limbs=(), upper_body=())
AFLW_POINTS = KeypointSet(
    name="aflw", joints=tuple(f"p{i}" for i in range(19)),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17)),
    limbs=(), upper_body=())


@dataclasses.dataclass(frozen=True)
class FaceLandmarks(PersonDataset):
    """NME protocol. `normaliser`: the two points whose distance normalises a face's error
    (outer eye corners 60/72 for WFLW, 36/45 for 300W, pupils 8/9 for COFW); None: the face
    box's size (AFLW). Training faces and evaluation splits are HRNet's."""

    normaliser: tuple[int, int] | None = None

    def evaluation_rows(self, record, persons, predicted, box_scores, scales):
        truth = persons["keypoints"][..., :2]
        normalisers = persons["box_size"] if self.normaliser is None else np.linalg.norm(
            truth[:, self.normaliser[0]] - truth[:, self.normaliser[1]], axis=-1)
        return {"keypoints": predicted, "truth": truth, "normaliser": normalisers}

    def summarize(self, rows: dict[str, np.ndarray]) -> dict[str, float]:
        from hrnet_jax.metrics import nme

        return nme.landmark_summary(nme.normalised_mean_error(
            rows["keypoints"][..., :2], rows["truth"], rows["normaliser"]))


def _faces(points: KeypointSet, normaliser, train_faces: int, eval_split: str) -> FaceLandmarks:
    return FaceLandmarks(name=points.name, task="landmarks",
                         builder=("face_landmarks", "HrnetFaceLandmarks"),
                         tfds_name=f"hrnet_face_landmarks/{points.name}", keypoints=points,
                         uniform_augment=True, normaliser=normaliser, train_examples=train_faces,
                         eval_split=eval_split)


WFLW = _faces(WFLW_POINTS, (60, 72), 7500, "test")
FACES_300W = _faces(POINTS_300W, (36, 45), 3148, "valid")
COFW = _faces(COFW_POINTS, (8, 9), 1345, "test")
AFLW = _faces(AFLW_POINTS, None, 20000, "test")

DATASETS = (WFLW, FACES_300W, COFW, AFLW)
