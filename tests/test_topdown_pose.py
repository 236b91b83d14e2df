"""Top-down pose: geometry, augmentation, COCO/MPII preparation, decoding, COCO AP, PCKh."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import rows_from_targets
from hrnet_jax.data import prepare, topdown
from hrnet_jax.data.datasets.coco import KEYPOINTS as COCO
from hrnet_jax.evaluation import coco_keypoints, pckh
from hrnet_jax.tasks import heatmaps
from hrnet_jax.experiments import load
from hrnet_jax.tasks import make_task

DETECTIONS = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    """coco_mini and mpii_mini prepared once into ArrayRecord."""
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare.prepare("coco_keypoints", str(shared_data / "coco_mini"), str(data_dir))
    prepare.prepare("mpii", str(shared_data / "mpii_mini"), str(data_dir))
    return data_dir


def coco_records(prepared):
    return tfds.builder("hrnet_coco_keypoints", data_dir=str(prepared)).as_data_source("val")


def coco_config(prepared, **data):
    config = load("pose_coco_w32_256x192:smoke")
    config.data.data_dir = str(prepared)
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


# -- geometry -----------------------------------------------------------------------------------
def test_box_becomes_the_references_centre_and_scale():
    centre, scale = topdown.box_to_centre_scale(np.array([280.79, 44.73, 218.7, 346.68]), 0.75)
    np.testing.assert_allclose(centre, [280.79 + 109.35, 44.73 + 173.34], rtol=1e-6)
    # too narrow for 3:4 -> widened to 0.75 x height; then x 1.25, in units of 200 px
    np.testing.assert_allclose(scale, [346.68 * 0.75 / 200 * 1.25, 346.68 / 200 * 1.25], rtol=1e-6)


def test_affine_crop_without_rotation_is_a_scaled_translation():
    centre, scale = np.array([300.0, 200.0]), np.array([1.5, 2.0])
    matrix = topdown.affine_matrix(centre, scale, 0.0, (192, 256))
    zoom = 192 / (1.5 * 200)  # the box width fills the crop width, both axes alike
    points = np.array([[300.0, 200.0], [150.0, 0.0], [410.0, 333.0]])
    expected = (points - centre) * zoom + [96, 128]
    np.testing.assert_allclose(topdown.apply_affine(points, matrix), expected, atol=1e-4)


def test_rotated_affine_maps_back_with_its_inverse():
    centre, scale = np.array([120.0, 80.0]), np.array([0.6, 0.8])
    forward = topdown.affine_matrix(centre, scale, 30.0, (48, 64))
    back = topdown.affine_matrix(centre, scale, 30.0, (48, 64), inverse=True)
    points = np.random.default_rng(0).uniform(0, 200, (10, 2))
    np.testing.assert_allclose(topdown.apply_affine(topdown.apply_affine(points, forward), back),
                               points, atol=1e-3)
    # the reference's second point: half a box width (60 px) from the centre, turned by 30
    # degrees, becomes the point half a crop width (24 px) above the crop's centre (24, 32)
    turned = centre + 60 * np.array([np.sin(np.pi / 6), -np.cos(np.pi / 6)])
    np.testing.assert_allclose(topdown.apply_affine(turned, forward), [24, 8], atol=1e-4)


def test_mirrored_joints_swap_sides_and_mirror_back():
    joints = np.random.default_rng(1).uniform(0, 300, (17, 2)).astype(np.float32)
    visible = np.ones(17, np.float32)
    visible[3] = 0
    mirrored, mirrored_visible = topdown.mirror_joints(joints, visible, 400, COCO)
    assert mirrored_visible[4] == 0 and mirrored_visible[3] == 1  # left ear <-> right ear
    np.testing.assert_allclose(mirrored[6], [399 - joints[5, 0], joints[5, 1]])
    back, back_visible = topdown.mirror_joints(mirrored, mirrored_visible, 400, COCO)
    np.testing.assert_allclose(back, joints * visible[:, None], atol=1e-4)
    np.testing.assert_array_equal(back_visible, visible)


@pytest.mark.parametrize("seed", range(6))
def test_augmented_crop_keeps_each_joint_on_its_pixel(seed):
    """A dot painted at one joint lands, after random scale, rotation, mirror and crop, where
    the augmented joints say that joint (or its mirror twin) is."""
    image = np.zeros((300, 400, 3), np.uint8)
    joints = np.random.default_rng(seed).uniform(120, 260, (17, 2)).astype(np.float32)
    joints[:, 1] -= 40
    joints[5] = joints[5].round()  # the dot's centre is the joint
    x, y = joints[5].astype(int)
    image[y - 2:y + 3, x - 2:x + 3] = 255
    centre, scale = topdown.box_to_centre_scale(np.array([100, 60, 200, 200]), 0.75)
    example = {"image": image, "joints": joints, "visible": np.ones(17, np.float32),
               "centre": centre, "scale": scale, "rotation": np.float32(0)}
    rng = np.random.default_rng(seed)
    augmented = topdown.random_person_view(example, rng, COCO, 0.75, 0.35, 45.0, True, 0.0)
    crop = topdown.crop_person(augmented, (256, 192))
    mirrored = not np.allclose(augmented["joints"][5], joints[5])  # slots swapped
    joint = 6 if mirrored else 5  # the left shoulder is the mirror image's right shoulder
    grey = crop["image"].max(-1).astype(np.float64)
    ys, xs = np.mgrid[:grey.shape[0], :grey.shape[1]]
    found = np.array([(grey * xs).sum(), (grey * ys).sum()]) / grey.sum()  # the dot's centroid
    np.testing.assert_allclose(found, crop["joints"][joint], atol=0.75)


def test_half_body_box_surrounds_the_chosen_half():
    joints = np.stack([np.full(17, 100.0), np.linspace(0, 320, 17)], -1).astype(np.float32)
    joints[:, 0] += np.linspace(-20, 20, 17)
    for seed in range(5):
        centre, scale = topdown.half_body_box(joints, np.ones(17), COCO, 0.75,
                                              np.random.default_rng(seed))
        half = joints[:11] if centre[1] < joints[11:, 1].min() else joints[11:]
        np.testing.assert_allclose(centre, half.mean(0), rtol=1e-5)
        height = half[:, 1].max() - half[:, 1].min()
        np.testing.assert_allclose(scale[1], height / 200 * 1.5, rtol=1e-5)


# -- preparation --------------------------------------------------------------------------------
def test_coco_records_hold_every_person_and_training_skips_the_unlabelled(prepared, shared_data):
    records = coco_records(prepared)
    assert [int(records[i]["image_id"]) for i in range(len(records))] == [785, 40083]
    image = cv2.imread(str(shared_data / "coco_mini/val2017/000000040083.jpg"))[..., ::-1]
    np.testing.assert_array_equal(records[1]["image"], image)  # the JPEG's own bytes
    persons = topdown.person_arrays(records[1], 17)
    assert persons["keypoints"].shape == (3, 17, 3)
    assert persons["num_keypoints"].tolist() == [14, 15, 0]  # the 0-keypoint person is kept...
    builder = tfds.builder("hrnet_coco_keypoints", data_dir=str(prepared))
    assert builder.info.metadata["val"]["training_persons"] == [[0, 0], [1, 0], [1, 1]]  # ...not trained
    instances = topdown.PersonInstances(records, [[1, 1]], 0.75)
    person = instances[0]
    np.testing.assert_array_equal(person["visible"][-2:], [0, 0])
    np.testing.assert_allclose(person["joints"][0], [343, 164])


def test_coco_corrupt_image_is_named(shared_data, tmp_path):
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations/person_keypoints_val2017.json").write_text(
        (shared_data / "coco_mini/annotations/person_keypoints_val2017.json").read_text())
    (root / "val2017/000000000785.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="000000000785.jpg"):
        prepare.prepare("coco_keypoints", str(root), str(tmp_path / "out"))


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


# -- decoding -----------------------------------------------------------------------------------
def gaussians(points: np.ndarray, size=(64, 48), sigma=2.0) -> np.ndarray:
    ys, xs = np.mgrid[0:size[0], 0:size[1]]
    return np.exp(-((xs[..., None] - points[:, 0]) ** 2 + (ys[..., None] - points[:, 1]) ** 2)
                  / (2 * sigma ** 2)).astype(np.float32)[None]


def test_quarter_offset_decoder_follows_the_reference():
    maps = np.zeros((1, 8, 8, 4), np.float32)
    maps[0, 4, 4, 0], maps[0, 4, 5, 0], maps[0, 5, 4, 0] = 1.0, 0.5, 0.2  # right and down
    maps[0, 1, 4, 1], maps[0, 1, 5, 1] = 1.0, 0.5  # y = 1: outside 1 < y, not moved
    maps[0, 6, 3, 2], maps[0, 6, 2, 2] = 1.0, 0.5  # left
    maps[..., 3] = -1.0  # no positive maximum: the reference's coordinates are 0
    coords, scores = heatmaps.decode_quarter_offset(maps)
    np.testing.assert_allclose(coords[0], [[4.25, 4.25], [4, 1], [2.75, 6], [0, 0]])
    np.testing.assert_allclose(scores[0], [1, 1, 1, -1])


def test_dark_recovers_sub_pixel_centres_the_quarter_offset_cannot():
    rng = np.random.default_rng(0)
    truth = np.stack([rng.uniform(5, 42, 17), rng.uniform(5, 58, 17)], -1)
    maps = gaussians(truth)
    dark, _ = heatmaps.decode_dark(maps, heatmaps.blur_kernel_size(2.0))
    quarter, _ = heatmaps.decode_quarter_offset(maps)
    assert np.abs(dark[0] - truth).max() < 0.01
    assert np.linalg.norm(quarter[0] - truth, axis=-1).mean() > 0.1


def test_flip_back_undoes_the_mirror_and_shifts_one_pixel():
    maps = np.random.default_rng(0).uniform(size=(2, 16, 12, 17)).astype(np.float32)
    of_mirrored_input = maps[:, :, ::-1][..., COCO.flip_permutation()]
    np.testing.assert_array_equal(heatmaps.flip_back(of_mirrored_input, COCO, shift=False), maps)
    shifted = heatmaps.flip_back(of_mirrored_input, COCO)
    np.testing.assert_array_equal(shifted[:, :, 1:], maps[:, :, :-1])
    np.testing.assert_array_equal(shifted[:, :, 0], maps[:, :, 0])


# -- rescoring, OKS-NMS, COCO AP, PCKh ----------------------------------------------------------
def test_rescoring_is_box_score_times_mean_confident_joint_score():
    poses = np.zeros((2, 3, 3), np.float32)
    poses[0, :, 2] = [0.5, 0.1, 0.9]
    poses[1, :, 2] = [0.1, 0.2, 0.05]  # none above 0.2: score 0, as the reference
    np.testing.assert_allclose(coco_keypoints.rescore(poses, np.array([0.8, 1.0])), [0.56, 0.0])


def test_oks_matches_the_coco_formula_and_nms_drops_duplicates():
    sigmas = np.array(COCO.sigmas) / 10
    pose = np.concatenate([np.random.default_rng(0).uniform(0, 100, (17, 2)), np.ones((17, 1))], -1)
    moved = pose.copy()
    moved[3, :2] += [3.0, 4.0]
    oks = coco_keypoints.object_keypoint_similarity(pose, moved[None], 900.0, np.array([1100.0]), sigmas)
    expected = (16 + np.exp(-25 / (2 * sigmas[3]) ** 2 / 1000.0 / 2)) / 17
    np.testing.assert_allclose(oks, [expected], rtol=1e-6)
    far = pose.copy()
    far[:, :2] += 80
    poses = np.stack([pose, moved, far])
    kept = coco_keypoints.oks_nms(poses, np.array([0.5, 0.9, 0.7]), np.full(3, 1000.0), sigmas)
    assert kept == [1, 2]  # the better-scored duplicate survives, the distant pose too


@pytest.fixture(scope="module")
def coco_truth(shared_data):
    data = json.loads((shared_data / "coco_mini/annotations/person_keypoints_val2017.json").read_text())
    annotations = data["annotations"]
    persons = {"image_id": np.array([a["image_id"] for a in annotations]),
               "bbox": np.array([a["bbox"] for a in annotations], np.float32),
               "keypoints": np.array([a["keypoints"] for a in annotations], np.float32).reshape(-1, 17, 3),
               "area": np.array([a["area"] for a in annotations], np.float32),
               "iscrowd": np.array([a["iscrowd"] for a in annotations]),
               "num_keypoints": np.array([a["num_keypoints"] for a in annotations])}
    images = [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in data["images"]]
    return coco_keypoints.coco_ground_truth(images, persons, COCO), persons


def test_ground_truth_as_predictions_scores_ap_one(coco_truth):
    truth, persons = coco_truth
    labelled = persons["num_keypoints"] > 0
    results = coco_keypoints.coco_results(persons["image_id"][labelled], persons["keypoints"][labelled],
                                      np.ones(labelled.sum()), persons["area"][labelled],
                                      np.array(COCO.sigmas) / 10)
    figures = coco_keypoints.coco_keypoint_ap(truth, results)
    assert figures["ap"] == pytest.approx(1.0) and figures["ar"] == pytest.approx(1.0)
    assert figures["ap50"] == pytest.approx(1.0)


def test_pckh_counts_joints_within_half_a_head():
    truth = np.zeros((2, 16, 2))
    visible = np.ones((2, 16))
    visible[1, 0] = 0
    predicted = truth.copy()
    predicted[0, 9] = [3.0, 4.0]  # head top 5 px off: inside 0.5 x head 12
    predicted[0, 10] = [7.0, 0.0]  # a wrist 7 px off: outside 0.5 x 12 = 6
    predicted[1, 0] = [100, 100]  # unlabelled: does not count
    predicted[0, 6] = [50, 50]  # the pelvis: not in the mean
    result = pckh.pckh(predicted, truth, visible, np.array([12.0, 12.0]))
    assert result["pckh/head"] == 1.0
    assert result["pckh/wrist"] == pytest.approx(0.75)
    assert result["pckh"] == pytest.approx((27 - 1) / 27)  # 14 joints x 2 persons - 1 unlabelled


# -- the task end to end ------------------------------------------------------------------------
def test_ground_truth_through_our_heatmaps_and_decoder_scores_ap_above_095(prepared):
    """Each ground-truth person is cropped, encoded into Gaussian targets by the pipeline and
    handed to evaluation as if the network had predicted them: decoding, the map back to the
    image, rescoring, NMS and pycocotools must give AP >= 0.95 on the real images."""
    records = coco_records(prepared)
    for decoder in ("argmax", "dark"):
        config = coco_config(prepared, image_size=(256, 192), eval_batch_size=2)
        config.eval.decoder = decoder
        task = make_task(config)

        def evaluated(index, record):
            persons = topdown.person_arrays(record, 17)
            height, width = record["image"].shape[:2]
            return [slot for slot in range(len(persons["bbox"])) if topdown.is_training_person(
                persons["bbox"][slot], persons["keypoints"][slot], persons["area"][slot],
                persons["iscrowd"][slot], width, height)]

        figures = task.summarize(rows_from_targets(task, records, 0.75, evaluated, clip_boxes=True))
        assert figures["ap"] >= 0.95, (decoder, figures)


def test_missing_detections_file_is_named_when_evaluation_needs_it(prepared, tmp_path):
    task = make_task(coco_config(prepared, person_boxes=str(tmp_path / "nowhere.json")))
    with pytest.raises(FileNotFoundError, match="nowhere.json.*ground_truth"):
        task.evaluate_image(lambda batch: None, dict(coco_records(prepared)[0]))


@pytest.fixture(scope="module")
def coco_run(prepared, shared_data, tmp_path_factory):
    """pose_coco_w32_256x192:smoke trained 4 steps, evaluated with the sample's detections and
    the flip test."""
    from hrnet_jax import main

    workdir = tmp_path_factory.mktemp("pose_coco")
    args = ["--experiment=pose_coco_w32_256x192:smoke", f"--workdir={workdir}",
            f"--set=data.data_dir={prepared}", "--set=eval.flip=true",
            f"--set=data.person_boxes={shared_data / 'coco_mini' / DETECTIONS}"]
    assert main.main(args) == 0
    return workdir, args


def test_coco_smoke_trains_and_reports_keypoint_ap(coco_run):
    workdir, _ = coco_run
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["split"] == "train"]
    assert [l["step"] for l in train] == [2, 4] and all(np.isfinite(l["loss"]) for l in train)
    evaluation_line = [l for l in lines if l["split"] == "eval"][-1]
    assert set(coco_keypoints.COCO_STATS) <= set(evaluation_line)
    assert 0 <= evaluation_line["ap"] <= 1
    assert evaluation_line["persons"] > 0  # detections were evaluated (kept by OKS-NMS)
    picture = cv2.imread(str(next((workdir / "pictures").glob("*.png"))))
    assert picture.shape == (425, 1280, 3)  # ground truth | prediction, on the whole image
    green = (picture[..., 1] > 200) & (picture[..., 0] < 80) & (picture[..., 2] < 80)
    assert green[:, :640].sum() > 500  # the ground-truth skeleton


def test_predict_draws_skeletons_in_the_given_boxes(coco_run, shared_data, tmp_path):
    from hrnet_jax import main

    workdir, args = coco_run
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([[280.79, 44.73, 218.7, 346.68]]))
    image = shared_data / "coco_mini/val2017/000000000785.jpg"
    no_dataset = f"--set=data.data_dir={tmp_path}/nowhere"  # predicting needs no dataset
    assert main.main(args + [no_dataset, "--mode=predict", f"--input={image}", f"--boxes={boxes}",
                             f"--output={tmp_path}/out"]) == 0
    picture = cv2.imread(str(tmp_path / "out" / "000000000785_skeleton.png"))
    assert picture.shape == (425, 640, 3)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([[1, 2, 3]]))
    assert main.main(args + ["--mode=predict", f"--input={image}", f"--boxes={bad}"]) == 2


def test_mpii_ground_truth_through_our_heatmaps_scores_pckh_one(prepared):
    """MPII's evaluation (every annotated person, its box as annotated, no clipping) finds the
    real sample's joints again from their own targets: PCKh@0.5 = 1."""
    config = load("pose_mpii_w32_256x256")
    config.data.data_dir, config.data.eval_split = str(prepared), "test_mpii"
    config.eval.flip = False
    task = make_task(config)
    records = tfds.builder("hrnet_mpii", data_dir=str(prepared)).as_data_source("test_mpii")
    every_person = lambda index, record: list(range(len(record["persons"]["bbox"])))
    figures = task.summarize(rows_from_targets(task, records, 1.0, every_person))
    assert figures["pckh"] == 1.0 and figures["pckh/head"] == 1.0, figures


def test_mpii_smoke_trains_and_reports_pckh(prepared, tmp_path):
    from hrnet_jax.training.loop import Trainer

    config = load("pose_mpii_w32_256x256:smoke")
    config.data.data_dir = str(prepared)
    config.loop.num_steps = 2
    trainer = Trainer(config, str(tmp_path))
    assert len(trainer.train_source) == 5
    result = trainer.train()
    assert 0 <= result["pckh"] <= 1 and "pckh/head" in result
