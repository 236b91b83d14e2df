"""Facial landmarks: point pairs, the json and CSV layouts, NME / failure rate / AUC, smoke runs."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import rows_from_targets
from hrnet_jax.data import prepare, topdown
from hrnet_jax.data.datasets import face_landmarks

WFLW, COFW = face_landmarks.WFLW_POINTS, face_landmarks.COFW_POINTS
LANDMARK_SETS = {faces.name: faces.keypoints for faces in face_landmarks.DATASETS}
NME_NORMALISERS = {faces.name: faces.normaliser for faces in face_landmarks.DATASETS}
from hrnet_jax.experiments import load
from hrnet_jax.tasks import make_task


def annotations(shared_data, name):
    return json.loads((shared_data / f"{name}_mini" / f"test_{name}.json").read_text())


def proper_procrustes_residual(shape: np.ndarray, other: np.ndarray) -> float:
    """Mean distance after the best rotation + scale + shift of `other` onto `shape`."""
    a, b = shape - shape.mean(0), other - other.mean(0)
    u, s, vt = np.linalg.svd(b.T @ a)
    sign = np.sign(np.linalg.det(u @ vt))  # rotations only: a reflection must not align
    u[:, -1] *= sign
    s = s * np.array([1.0, sign])
    return float(np.linalg.norm(b @ (u @ vt) * (s.sum() / (b ** 2).sum()) - a, axis=1).mean())


@pytest.mark.parametrize("points", [WFLW, COFW], ids=lambda p: p.name)
def test_mirror_pairs_map_real_faces_onto_themselves(shared_data, points):
    """A face mirrored with its left/right points swapped is (nearly) the same shape; mirrored
    without the swap it is not: the pairs are right for the real samples' annotations."""
    for face in annotations(shared_data, points.name)["annotations"]:
        shape = np.asarray(face["keypoints"], np.float64).reshape(-1, 3)[:, :2]
        mirrored = shape * [-1, 1]
        a, b = NME_NORMALISERS[points.name]
        eyes = np.linalg.norm(shape[a] - shape[b])  # residuals seen: 0.05-0.09 vs 0.49-0.60
        assert proper_procrustes_residual(shape, mirrored[points.flip_permutation()]) < 0.15 * eyes
        assert proper_procrustes_residual(shape, mirrored) > 0.4 * eyes


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    for name in ("wflw", "cofw"):
        prepare.prepare(name, str(shared_data / f"{name}_mini"), str(data_dir))
    return data_dir


def records(data_dir, name, split="test"):
    return tfds.builder(f"hrnet_face_landmarks/{name}", data_dir=str(data_dir)).as_data_source(split)


def test_json_faces_keep_the_references_centre_and_scale(prepared, shared_data):
    data = annotations(shared_data, "wflw")
    faces = records(prepared, "wflw")
    assert len(faces) == 2
    by_name = {faces[i]["file_name"].decode(): topdown.person_arrays(faces[i], 98) for i in range(2)}
    image_names = {image["id"]: image["file_name"] for image in data["images"]}
    first = data["annotations"][0]
    persons = by_name[image_names[first["image_id"]]]
    np.testing.assert_allclose(persons["keypoints"][0],
                               np.asarray(first["keypoints"], np.float32).reshape(98, 3))
    side = 200 * first["scale"]
    np.testing.assert_allclose(persons["bbox"][0], [first["center"][0] - side / 2,
                                                    first["center"][1] - side / 2, side, side],
                               rtol=1e-5)
    assert sorted(len(p["bbox"]) for p in by_name.values()) == [1, 3]
    # COFW's json has no centre/scale: the square around the annotated box
    cofw = topdown.person_arrays(records(prepared, "cofw")[0], 29)
    x, y, w, h = annotations(shared_data, "cofw")["annotations"][0]["bbox"]
    np.testing.assert_allclose(cofw["bbox"][0], [x + w / 2 - h / 2, y, h, h], rtol=1e-5)


def write_csv_dataset(folder, name: str, faces: int = 3) -> list[dict]:
    """Generated faces in HRNet-Facial-Landmark-Detection's CSV layout (AFLW with box_size)."""
    rng = np.random.default_rng(0)
    count = LANDMARK_SETS[name].num_joints
    (folder / "images").mkdir(parents=True)
    header = ["image_name", "scale"] + (["box_size"] if name == "aflw" else []) + \
        ["center_w", "center_h"] + [f"{axis}{i}" for i in range(count) for axis in "xy"]
    rows = []
    for index in range(faces):
        file = f"face{index}.jpg"
        cv2.imwrite(str(folder / "images" / file), rng.integers(0, 255, (160, 120, 3), np.uint8))
        centre = rng.uniform(50, 70, 2)
        points = centre + rng.uniform(-30, 30, (count, 2))
        rows.append({"file": file, "scale": 0.4, "box_size": 61.5, "centre": centre, "points": points})
    with open(folder / f"face_landmarks_{name}_test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            writer.writerow([r["file"], r["scale"]] + ([r["box_size"]] if name == "aflw" else [])
                            + list(r["centre"]) + list(r["points"].reshape(-1)))
    return rows


@pytest.mark.parametrize("name", ["300w", "aflw"])
def test_csv_layout_is_read_as_the_reference_reads_it(tmp_path, name):
    rows = write_csv_dataset(tmp_path / "src", name)
    prepare.prepare(name, str(tmp_path / "src"), str(tmp_path / "tfds"))
    faces = records(tmp_path / "tfds", name)
    assert len(faces) == 3
    count = LANDMARK_SETS[name].num_joints
    for index, row in enumerate(rows):
        persons = topdown.person_arrays(faces[index], count)
        np.testing.assert_allclose(persons["keypoints"][0, :, :2], row["points"], rtol=1e-5)
        np.testing.assert_allclose(persons["bbox"][0, :2] + 40, row["centre"], rtol=1e-5)  # 200 x 0.4 / 2
        expected_size = 61.5 if name == "aflw" else 80.0
        assert persons["box_size"][0] == pytest.approx(expected_size)


def face_config(data_dir, name):
    config = load(f"face_{name}:smoke")
    config.data.data_dir = str(data_dir)
    config.data.image_size = (256, 256)
    return config


@pytest.mark.parametrize("name", ["wflw", "cofw"])
def test_ground_truth_through_our_heatmaps_and_decoder_gives_a_small_nme(prepared, name):
    """The real faces' points, encoded into 64x64 targets and decoded back to the image by the
    task's evaluation, are found again to within 2% of the inter-ocular distance."""
    task = make_task(face_config(prepared, name))
    faces = records(prepared, name)
    every_face = lambda index, record: list(range(len(record["persons"]["bbox"])))
    figures = task.summarize(rows_from_targets(task, faces, 1.0, every_face))
    assert figures["nme"] < 0.02 and figures["failure_rate"] == 0.0, figures
    assert figures["auc"] > 0.8


# Slow for the suite's time: the faces' evaluation runs in the fast tier (ground truth -> small NME); the top-down training path is COCO's (test_coco_keypoints).
@pytest.mark.slow
def test_wflw_smoke_trains_and_reports_nme(prepared, tmp_path):
    from hrnet_jax import main

    assert main.main(["--experiment=face_wflw:smoke", f"--workdir={tmp_path}",
                      f"--set=data.data_dir={prepared}"]) == 0
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [l for l in lines if l["split"] == "eval"][-1]
    assert {"nme", "failure_rate", "auc"} <= set(last) and last["nme"] > 0
    assert len(list((tmp_path / "pictures").glob("*.png"))) == 1


@pytest.mark.parametrize("name", sorted(LANDMARK_SETS))
def test_each_face_experiment_states_its_recipe(name):
    config = load(f"face_{name}")
    assert config.model.num_classes == LANDMARK_SETS[name].num_joints
    assert (config.optim.optimizer, config.optim.learning_rate) == ("adam", 1e-4)
    assert config.data.image_size == (256, 256) and config.model.arch == "hrnet_w18"
    assert load(f"face_{name}:smoke").model.arch == "tiny"
