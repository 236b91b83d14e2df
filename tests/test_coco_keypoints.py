"""COCO person keypoints: preparation from the real sample, the pose task's evaluation
(detections, rescoring, OKS-NMS, keypoint AP), a smoke run and predictions."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import record_compression, rows_from_targets
from hrnet_jax.data import prepare, topdown
from hrnet_jax.metrics import coco_keypoints
from hrnet_jax.experiments import load
from hrnet_jax.tasks import make_task


DETECTIONS = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    """coco_mini prepared once into ArrayRecord."""
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare.prepare("coco_keypoints", str(shared_data / "coco_mini"), str(data_dir))
    return data_dir


def coco_records(prepared):
    return tfds.builder("hrnet_coco_keypoints", data_dir=str(prepared)).as_data_source("val")


def coco_config(prepared, **data):
    config = load("pose_coco:w32,256x192,smoke")
    config.data.data_dir = str(prepared)
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


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
    """pose_coco:w32,256x192,smoke trained 4 steps, evaluated with the sample's detections and
    the flip test."""
    from hrnet_jax import main

    workdir = tmp_path_factory.mktemp("pose_coco")
    args = ["--experiment=pose_coco:w32,256x192,smoke", f"--workdir={workdir}",
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
    assert picture.shape == (22 + 425, 3 * 640 + 2 * 4, 3)  # input | prediction | ground truth
    green = (picture[..., 1] > 200) & (picture[..., 0] < 80) & (picture[..., 2] < 80)
    assert green[22:, 2 * (640 + 4):].sum() > 500  # the ground-truth skeleton, third
    assert green[22:, :640].sum() == 0  # the input, untouched


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
    # The same from Python: keypoints in the image's pixels, inside the person's box.
    import hrnet_jax
    from hrnet_jax.predict import read_image

    person = np.array([[280.79, 44.73, 218.7, 346.68]], np.float32)
    found = hrnet_jax.Predictor.from_workdir(str(workdir))([read_image(str(image))], person)[0]
    assert found["keypoints"].shape == (1, 17, 2) and found["scores"].shape == (1, 17)
    x, y = found["keypoints"][0].T
    assert (x >= 280.79 - 60).all() and (x <= 280.79 + 218.7 + 60).all() and (y >= 0).all()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([[1, 2, 3]]))
    assert main.main(args + ["--mode=predict", f"--input={image}", f"--boxes={bad}"]) == 2


def whole_image_crop(view, input_size):
    """The crop as the pipeline made it before it copied only the sampled region of a
    mirrored picture: the whole (mirrored) picture made contiguous, then warped."""
    height, width = input_size
    matrix = topdown.affine_matrix(view["centre"], view["scale"], float(view["rotation"]),
                                   (width, height))
    return cv2.warpAffine(np.ascontiguousarray(view["image"]), matrix, (width, height),
                          flags=cv2.INTER_LINEAR)


def test_faster_person_crops_are_the_same_samples(prepared):
    """300 augmented training samples of the real sample (every person, mirrored or not,
    rotated, half-body): the crops are exactly the whole-picture warp's, but for a mirrored
    picture (warped from the stored pixels through a mirrored, shifted map, not copied), where
    OpenCV's fixed-point coordinates round differently now and then: at most one grey level,
    on at most 0.1% of a crop's pixels (measured: 0.07%). (The targets: test_heatmaps.)"""
    config = coco_config(prepared, train_split="val")
    task = make_task(config)
    train, _ = task.dataset.sources(config.data)
    mirrored = 0
    for index in range(300):
        view = task.augment(train[index % len(train)], np.random.default_rng(index))
        sample = task.prepare(view)
        reference = whole_image_crop(view, task.input_size)
        difference = np.abs(sample["image"].astype(int) - reference)
        if view["image"].flags.c_contiguous:
            np.testing.assert_array_equal(sample["image"], reference)
        else:
            mirrored += 1
            assert difference.max() <= 1 and (difference > 0).mean() <= 1e-3
    assert 100 < mirrored < 200  # both kinds were compared


@pytest.fixture(scope="module")
def crops_prepared(prepared, shared_data):
    """coco_keypoints_crops prepared beside coco_keypoints (whose records it reuses)."""
    prepare.prepare("coco_keypoints_crops", str(shared_data / "coco_mini"), str(prepared))
    return prepared


def test_person_crops_hold_the_training_persons_loose_regions(crops_prepared, shared_data):
    records = coco_records(crops_prepared)
    crops = tfds.builder("hrnet_coco_person_crops", data_dir=str(crops_prepared)
                         ).as_data_source("val")
    persons = tfds.builder("hrnet_coco_keypoints", data_dir=str(crops_prepared)
                           ).info.metadata["val"]["training_persons"]
    assert [crops[i]["person"].tolist() for i in range(len(crops))] == persons
    for index, (record, slot) in enumerate(persons):
        crop, image = crops[index], records[record]["image"]
        (x0, y0), (height, width) = crop["origin"], crop["image_size"]
        assert (height, width) == image.shape[:2]
        np.testing.assert_array_equal(
            crop["image"], image[y0:y0 + crop["image"].shape[0], x0:x0 + crop["image"].shape[1]])
        np.testing.assert_array_equal(crop["keypoints"].reshape(-1),
                                      records[record]["persons"]["keypoints"][slot].reshape(-1))
    # the third person's region ends inside its image on the left and top: a real cut
    assert crops[2]["origin"].tolist() == [129, 18] and crops[2]["image"].shape[1] < 500
    # stored uncompressed (raw pixels: zstd was half of reading a crop); prepared again, left so
    crops_dir = tfds.builder("hrnet_coco_person_crops", data_dir=str(crops_prepared)).data_dir
    assert record_compression(crops_dir) == {"uncompressed"}
    # training reads them with the lean parser (hrnet_jax.data.records): tfds's very records
    from hrnet_jax.data.datasets.coco import COCO_KEYPOINTS_CROPS

    lean = COCO_KEYPOINTS_CROPS.split(tfds.builder("hrnet_coco_person_crops",
                                                   data_dir=str(crops_prepared)), "val")
    assert type(lean).__name__ == "TensorRecords" and len(lean) == len(crops)
    for index in range(len(crops)):
        assert lean[index].keys() == crops[index].keys()
        for key, value in crops[index].items():
            assert type(lean[index][key]) is type(value)
            np.testing.assert_array_equal(lean[index][key], value)
            assert np.asarray(lean[index][key]).dtype == np.asarray(value).dtype
    prepare.prepare("coco_keypoints_crops", str(shared_data / "coco_mini"), str(crops_prepared))
    assert record_compression(crops_dir) == {"uncompressed"}
    assert len(tfds.builder("hrnet_coco_person_crops", data_dir=str(crops_prepared)
                            ).as_data_source("val")) == len(persons)


def test_person_crops_train_on_the_same_batches(crops_prepared):
    """The train loader's batches of coco_keypoints_crops for a seed are coco_keypoints': the
    same persons, views and joints exactly; the pictures warped from the crop rather
    than the whole image, where OpenCV's fixed-point coordinates round differently now and
    then: at most one grey level on at most 0.1% of a crop's pixels (measured: 0.09%). 40
    batches of 8: every person, mirrored or not, turned, half-body."""
    from hrnet_jax.data import pipeline

    batches = {}
    for name in ("coco_keypoints", "coco_keypoints_crops"):
        config = coco_config(crops_prepared, train_split="val", name=name)
        task = make_task(config)
        train, _ = task.dataset.sources(config.data)
        loader = iter(pipeline.train_loader(train, task.prepare, 8, 3, 0, task.augment))
        batches[name] = [next(loader) for _ in range(40)]
    cut = 0
    for whole, crop in zip(batches["coco_keypoints"], batches["coco_keypoints_crops"]):
        for key in ("joints", "visible"):  # what the targets are made of, in the loss
            np.testing.assert_array_equal(crop[key], whole[key])
        difference = np.abs(crop["image"].astype(int) - whole["image"]).reshape(8, -1)
        assert difference.max() <= 1 and (difference > 0).mean(1).max() <= 1e-3
        cut += int((difference > 0).any(1).sum())
    assert cut  # the comparison saw the rounding it bounds


def test_person_crops_refuse_views_they_were_not_cut_for(crops_prepared):
    config = coco_config(crops_prepared, train_split="val", name="coco_keypoints_crops",
                         scale_factor=0.5)
    with pytest.raises(ValueError, match="scale_factor=0.35.*data.name=coco_keypoints"):
        make_task(config).dataset.sources(config.data)
