"""Experiment configs, `--set` overrides and the command line's errors."""

from __future__ import annotations

import dataclasses
import json
import pathlib

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


def test_list_prints_every_experiment_with_its_description(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("seg_synthetic", "pose_synthetic", "cls_synthetic"):
        assert name in out
    assert "Segmentation demo" in out


def test_unknown_experiment_lists_the_real_ones(capsys, tmp_path):
    assert main(["--experiment=seg_cityscape", f"--workdir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "seg_cityscape" in err and "seg_synthetic" in err and "pose_synthetic" in err


def test_unknown_set_key_is_an_error_before_anything_runs(capsys, tmp_path):
    assert main(["--experiment=seg_synthetic:smoke", f"--workdir={tmp_path}",
                 "--set", "optim.momentun=0.5"]) == 2
    assert "optim.momentum" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()


def test_unknown_variant_is_named(capsys, tmp_path):
    assert main(["--experiment=seg_synthetic:huge", f"--workdir={tmp_path}"]) == 2
    assert "smoke" in capsys.readouterr().err


SNAPSHOT = pathlib.Path(__file__).parent / "data" / "experiment_configs.json"


def test_every_experiment_resolves_to_its_recorded_config():
    """Every experiment of before the families and its `:smoke` variant, under its name now,
    against the values recorded in tests/data/experiment_configs.json (recorded before the data
    configs were split by task: the keys of other tasks' data options are gone, every other
    value is the same; re-keyed when the detector options moved into model.detector, each old
    value checked equal to its new key's; re-keyed again when the one-file-a-run experiments
    became families, with nothing but `name` and `description` changed)."""
    recorded = json.loads(SNAPSHOT.read_text())
    kept = ["seg_cityscapes", *(name for name in experiments.available() if "synthetic" in name)]
    assert sorted(recorded) == sorted(experiments.current_name(f"{old}{suffix}")
                                      for old in (*experiments.RENAMED, *kept)
                                      for suffix in ("", ":smoke"))
    other_tasks_options = {f"data.{f.name}" for cls in config_lib.DATA_CONFIGS.values()
                           for f in dataclasses.fields(cls)}
    for spec, values in recorded.items():
        resolved = config_lib.flat(experiments.load(spec))
        assert {k: v for k, v in values.items() if k in resolved} == resolved, spec
        assert set(values) - set(resolved) <= other_tasks_options, spec


def test_each_family_lists_its_variants_and_each_variant_resolves_and_validates():
    for name, (description, table) in experiments.available().items():
        assert description and set(table) == set(experiments.variants_of(name)), name
        assert "smoke" in table, name
        for variant in table:
            config = experiments.load(f"{name}:{variant}")
            config_lib.validate(config)
            assert config.name == f"{name}:{variant}"


def test_variants_combine_in_the_familys_order_and_one_of_a_group():
    combined = experiments.load("seg_cityscapes:smoke,w18,ohem")
    assert (combined.model.arch, combined.model.width, combined.loss.ohem) == ("tiny", 4, True)
    assert config_lib.flat(experiments.load("seg_cityscapes:w18,ohem,smoke")) == \
        {**config_lib.flat(combined), "name": "seg_cityscapes:w18,ohem,smoke"}
    w18 = experiments.load("seg_cityscapes:w18,ohem")
    assert (w18.model.arch, w18.loss.ohem, w18.model.head) == ("hrnet_w18", True, "segmentation")
    with pytest.raises(ValueError, match="w18 and w48 both choose the width; choose one of "
                                         "w48, w18, w18_small_v2"):
        experiments.load("seg_cityscapes:w18,w48")
    with pytest.raises(ValueError, match="unknown variant 'w99'; choose from w48, w18"):
        experiments.load("seg_cityscapes:w99")


def test_an_old_experiment_name_says_what_it_is_called_now(capsys, tmp_path):
    assert main(["--experiment=pose_coco_w48_384x288:smoke", f"--workdir={tmp_path}"]) == 2
    assert "pose_coco_w48_384x288 is now called pose_coco:w48,384x288,smoke" in \
        capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_list_shows_each_family_with_its_variants_and_expected_results(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "seg_cityscapes" in out and "ohem" in out and "81.2" in out
    assert "cls_imagenet" in out and "w64" in out and "79.5%" in out


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
    config = experiments.load("det_coco_faster_rcnn:w18")
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
            ("det_coco_mask_rcnn:w18,smoke",
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
