"""Configs: `--set` overrides, validation, data and detector options by task and head, and the
command line's errors about them (the experiment families themselves: test_experiments.py)."""

from __future__ import annotations

import json

import pytest

from hrnet_jax import config as config_lib, experiments
from hrnet_jax.main import main


def test_overrides_convert_to_the_declared_types():
    config = experiments.load("seg_synthetic")
    for assignment in ["optim.learning_rate=0.02", "data.image_size=32x48", "optim.nesterov=true",
                       "model.num_classes=7", "model.upsample=none", "optim.milestones=0.5,0.75",
                       "optim.freeze=backbone/stem,backbone/layer1"]:
        config_lib.apply_override(config, assignment)
    assert config.optim.learning_rate == 0.02
    assert config.data.image_size == (32, 48)
    assert config.optim.nesterov is True
    assert config.model.num_classes == 7 and config.model.upsample is None
    assert config.optim.milestones == (0.5, 0.75)
    assert config.optim.freeze == ("backbone/stem", "backbone/layer1")  # no 'x' splitting here
    assert config_lib.from_dict(config_lib.to_dict(config)) == config


def test_unknown_key_names_the_valid_keys():
    config = experiments.load("seg_synthetic")
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.apply_override(config, "optim.lr=0.1")
    assert "'optim.lr'" in str(error.value) and "optim.learning_rate" in str(error.value)
    with pytest.raises(config_lib.ConfigError, match="loop.num_steps"):
        config_lib.apply_override(config, "optim=3")


def test_ill_typed_value_names_the_type():
    config = experiments.load("seg_synthetic")
    with pytest.raises(config_lib.ConfigError, match="loop.num_steps=many: expected int"):
        config_lib.apply_override(config, "loop.num_steps=many")


def test_unknown_set_key_is_an_error_before_anything_runs(capsys, tmp_path):
    assert main(["--experiment=seg_synthetic:smoke", f"--workdir={tmp_path}",
                 "--set", "optim.momentun=0.5"]) == 2
    assert "optim.momentum" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()


def test_print_config_prints_the_resolved_config(capsys):
    assert main(["--experiment=seg_cityscapes:smoke", "--print_config",
                 "--set", "optim.learning_rate=0.5"]) == 0
    printed = config_lib.from_dict(json.loads(capsys.readouterr().out))
    expected = experiments.load("seg_cityscapes:smoke")
    expected.optim.learning_rate = 0.5
    assert printed == expected and isinstance(printed.data, config_lib.SegmentationData)


def test_data_options_are_those_of_the_task():
    config = experiments.load("pose_synthetic")
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'data.crop_size'"):
        config_lib.apply_override(config, "data.crop_size=32x32")
    config_lib.apply_override(config, "data.heatmap_sigma=3")
    assert config.data.heatmap_sigma == 3.0


@pytest.mark.parametrize("override,named", [
    ("model.head=pose", ["model.head='pose'", "task='segmentation'"]),
    ("data.name=coco_keypoints", ["data.name='coco_keypoints'", "'pose' task", "task='segmentation'"]),
    ("data.name=pascal", ["unknown dataset 'pascal'", "cityscapes"]),
])
def test_a_head_or_dataset_of_another_task_is_named(capsys, tmp_path, override, named):
    assert main(["--experiment=seg_synthetic:smoke", f"--workdir={tmp_path}",
                 "--set", override]) == 2
    err = capsys.readouterr().err
    assert all(text in err for text in named), err
    assert not (tmp_path / "config.json").exists()


def test_detector_options_are_those_of_the_head():
    """model.detector holds the chosen head's options: FCOS's strides / channels / style, the
    R-CNNs' proposals, RoIs and per-stage settings. An option the head does not have names the
    head's options; choosing another head selects its options with its own defaults."""
    config = experiments.load("det_coco_rcnn:faster_rcnn,w18")
    config_lib.apply_override(config, "model.detector.rois=64")
    assert config.model.detector.rois == 64
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.apply_override(config, "model.detector.style=mmdet")  # an FCOS option
    assert "'faster_rcnn' has no option 'style'" in str(error.value)
    assert "stage_ious" in str(error.value) and "rois" in str(error.value)
    config_lib.apply_override(config, "model.head=cascade_rcnn")
    assert config.model.detector.stage_ious == (0.5, 0.6, 0.7)
    config_lib.apply_override(config, "model.detector.stage_weights=1,0.5")
    with pytest.raises(config_lib.ConfigError, match="one IoU and one weight a stage"):
        config_lib.validate(config)
    segmentation = experiments.load("seg_synthetic")
    with pytest.raises(config_lib.ConfigError, match="has no option 'rois'; its options: none"):
        config_lib.apply_override(segmentation, "model.detector.rois=64")
    fcos = experiments.load("det_coco_fcos:w18")
    config_lib.apply_override(fcos, "model.detector.style=improved")
    assert fcos.model.detector.style == "improved"
    json_round_trip = config_lib.from_dict(json.loads(config_lib.to_json(fcos)))
    assert json_round_trip == fcos


def test_a_config_json_written_before_model_detector_still_loads():
    """A workdir's config.json from before the detector options moved (model.strides,
    head_channels, fcos_style, rcnn_proposals, rcnn_rois) loads with each value in its new
    place, and the options a head did not read are dropped."""
    for name, old, expected in (
            ("det_coco_rcnn:mask_rcnn,w18,smoke",
             {"strides": [8, 16, 32, 64, 128], "head_channels": 64, "fcos_style": "improved",
              "rcnn_proposals": 100, "rcnn_rois": 64},
             dict(channels=64, proposals=100, rois=64, train_proposals=100, train_pre_nms=200)),
            ("det_synthetic",
             {"strides": [4, 8, 16, 32, 64], "head_channels": 64, "fcos_style": "improved",
              "rcnn_proposals": 1000, "rcnn_rois": 512},
             dict(strides=(4, 8, 16, 32, 64), channels=64, style="improved")),
            ("seg_synthetic", {"strides": [8, 16, 32, 64, 128], "head_channels": 256,
                               "fcos_style": "improved", "rcnn_proposals": 1000,
                               "rcnn_rois": 512}, {})):
        config = experiments.load(name)
        written = config_lib.to_dict(config)
        del written["model"]["detector"]
        written["model"].update(old)
        loaded = config_lib.from_dict(written)
        assert loaded == config, name
        for key, value in expected.items():
            assert getattr(loaded.model.detector, key) == value, (name, key)
