"""Facial landmarks (HRNetV2 on WFLW, 300W, COFW, AFLW): top-down heatmaps of each face box,
scored by the NME of the dataset's protocol (hrnet_jax.data.datasets.face_landmarks)."""

from __future__ import annotations

from hrnet_jax.tasks.topdown import TopDownKeypoints


class Landmarks(TopDownKeypoints):
    name = "landmarks"
