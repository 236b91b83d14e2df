"""MPII Human Pose: preparation from the real sample, PCKh through the pose task, a smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import rows_from_targets
from hrnet_jax.data import prepare, topdown
from hrnet_jax.experiments import load
from hrnet_jax.tasks import make_task


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    """mpii_mini prepared once into ArrayRecord."""
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare.prepare("mpii", str(shared_data / "mpii_mini"), str(data_dir))
    return data_dir


def test_mpii_records_apply_the_references_conventions(prepared, shared_data):
    annotations = json.loads((shared_data / "mpii_mini/test_mpii.json").read_text())
    builder = tfds.builder("hrnet_mpii", data_dir=str(prepared))
    records = builder.as_data_source("test_mpii")
    assert len(records) == 5
    assert builder.info.metadata["test_mpii"]["exact_head_sizes"] is False
    first = min(annotations, key=lambda a: a["image"])
    persons = topdown.person_arrays(records[0], 16)
    np.testing.assert_allclose(persons["keypoints"][0, :, :2], np.array(first["joints"]) - 1)
    s = first["scale"]
    cx, cy = first["center"][0] - 1, first["center"][1] - 1 + 15 * s
    np.testing.assert_allclose(persons["bbox"][0], [cx - 100 * s, cy - 100 * s, 200 * s, 200 * s],
                               rtol=1e-5)
    centre, scale = topdown.box_to_centre_scale(persons["bbox"][0], 1.0)
    np.testing.assert_allclose(scale, [1.25 * s, 1.25 * s], rtol=1e-5)  # the reference's s x 1.25


def test_mpii_ground_truth_through_our_heatmaps_scores_pckh_one(prepared):
    """MPII's evaluation (every annotated person, its box as annotated, no clipping) finds the
    real sample's joints again from their own targets: PCKh@0.5 = 1."""
    config = load("pose_mpii")
    config.data.data_dir, config.data.eval_split = str(prepared), "test_mpii"
    config.eval.flip = False
    task = make_task(config)
    records = tfds.builder("hrnet_mpii", data_dir=str(prepared)).as_data_source("test_mpii")
    every_person = lambda index, record: list(range(len(record["persons"]["bbox"])))
    figures = task.summarize(rows_from_targets(task, records, 1.0, every_person))
    assert figures["pckh"] == 1.0 and figures["pckh/head"] == 1.0, figures


# Slow for the suite's time: MPII's evaluation runs in the fast tier (ground truth -> PCKh 1); its training path is COCO's top-down one (test_coco_keypoints).
@pytest.mark.slow
def test_mpii_smoke_trains_and_reports_pckh(prepared, tmp_path):
    from hrnet_jax.training.loop import Trainer

    config = load("pose_mpii:smoke")
    config.data.data_dir = str(prepared)
    config.loop.num_steps = 2
    trainer = Trainer(config, str(tmp_path))
    assert len(trainer.train_source) == 5
    result = trainer.train()
    assert 0 <= result["pckh"] <= 1 and "pckh/head" in result
