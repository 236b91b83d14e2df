"""--mode=predict on raw pictures (hrnet_jax/predict.py): pose on the persons a detection run of
this project finds, folders of frames and videos, and the runs that cannot serve as detectors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hrnet_jax import config as config_lib, experiments, predict
from hrnet_jax.data import prepare
from hrnet_jax.main import main
from hrnet_jax.predictor import Predictor

IMAGE = "coco_mini/val2017/000000000785.jpg"


@pytest.fixture(scope="module")
def runs(shared_data, coco_detection_data, tmp_path_factory):
    """A detector (FCOS) and a top-down pose model, one step each on the COCO sample."""
    root = tmp_path_factory.mktemp("runs")
    keypoints = root / "tfds"
    prepare.prepare("coco_keypoints", str(shared_data / "coco_mini"), str(keypoints))
    one_step = ["--set=loop.num_steps=1", "--set=checkpoint.every_steps=1",
                "--set=eval.num_pictures=0"]
    assert main(["--experiment=det_coco_fcos:smoke", f"--workdir={root / 'det'}",
                 f"--set=data.data_dir={coco_detection_data}", "--set=eval.score_threshold=0",
                 *one_step]) == 0  # every candidate kept: one step leaves the scores at the prior
    assert main(["--experiment=pose_coco:smoke", f"--workdir={root / 'pose'}",
                 f"--set=data.data_dir={keypoints}", "--set=data.person_boxes=ground_truth",
                 *one_step]) == 0
    return root


def test_pose_on_a_detectors_persons_is_the_pose_models_output_on_its_boxes(
        runs, shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "PERSON_SCORE", 0.0)  # one step of training: low scores
    image = predict.read_image(str(shared_data / IMAGE))
    persons = predict.person_detector(str(runs / "det"))
    boxes = persons(image)
    assert len(boxes) > 0 and boxes.shape[1] == 4
    pose = Predictor.from_workdir(str(runs / "pose"))
    expected = pose.task.render(pose.predict, image, boxes)["skeleton"]
    assert main(["--experiment=pose_coco:smoke", f"--workdir={runs / 'pose'}", "--mode=predict",
                 f"--input={shared_data / IMAGE}", f"--detector={runs / 'det'}",
                 f"--output={tmp_path}"]) == 0
    drawn = cv2.imread(str(tmp_path / "000000000785_skeleton.png"))[..., ::-1]
    np.testing.assert_array_equal(drawn, expected)
    found = pose(image, boxes)[0]
    assert found["keypoints"].shape == (len(boxes), 17, 2)


def test_a_video_is_written_back_frame_by_frame(runs, tmp_path):
    video = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 128))
    for shade in (40, 120, 200):
        writer.write(np.full((128, 96, 3), shade, np.uint8))
    writer.release()
    assert main(["--experiment=pose_coco:smoke", f"--workdir={runs / 'pose'}", "--mode=predict",
                 f"--input={video}", f"--output={tmp_path / 'out'}"]) == 0
    written = cv2.VideoCapture(str(tmp_path / "out" / "walk_skeleton.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (int(written.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(written.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (96, 128)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    assert main(["--experiment=pose_coco:smoke", f"--workdir={runs / 'pose'}", "--mode=predict",
                 f"--input={broken}"]) == 2


def test_runs_that_cannot_serve_as_detectors_are_refused_naming_why(runs, tmp_path, capsys):
    def recorded(name: str):
        folder = tmp_path / name.replace(":", "_")
        folder.mkdir()
        config_lib.save_json(experiments.load(name), str(folder / "config.json"))
        return folder

    pose_args = ["--experiment=pose_coco:smoke", f"--workdir={runs / 'pose'}", "--mode=predict",
                 "--input=" + str(tmp_path)]
    for folder, why in ((recorded("seg_synthetic:smoke"), "a segmentation run"),
                        (recorded("det_synthetic:smoke"), "(disc, square, triangle, cross) have "
                                                          "no person"),
                        (tmp_path / "nothing", "holds no run")):
        assert main(pose_args + [f"--detector={folder}"]) == 2
        assert why in capsys.readouterr().err
    assert main(["--experiment=seg_synthetic:smoke", f"--workdir={tmp_path / 'seg'}",
                 "--mode=predict", "--from_init", f"--input={tmp_path}",
                 f"--detector={runs / 'det'}"]) == 2
    assert "finds persons for the pose and landmark experiments" in capsys.readouterr().err
