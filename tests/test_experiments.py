"""Experiment families (hrnet_jax/experiments.py, experiments/*.py): every recipe resolves to its
recorded config, variants combine in the family's order, old names say what they are called now,
and `--list` shows what each family offers."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

from hrnet_jax import config as config_lib, experiments
from hrnet_jax.main import main
from hrnet_jax.training import workdir as workdir_lib


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
    became families, with nothing but `name` and `description` changed; model.remat and
    model.remat_saves and eval.host_threads added at their defaults, which no experiment
    changes)."""
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
    for name, (description, table) in experiments.available().items():  # nothing cut short
        assert f"{name}  {description}\n" in out
        for variant, expected in table.items():
            assert f":{variant:18s} {expected}\n" in out


def test_a_run_recorded_under_an_old_name_resumes_under_the_new_one(tmp_path):
    """config.json of a run started as `seg_cityscapes_ohem:smoke`: the same run asked for as
    `seg_cityscapes:ohem,smoke` is no conflict and no change; another family still is."""
    old = experiments.load("seg_cityscapes:ohem,smoke")
    old.name, old.description = "seg_cityscapes_ohem:smoke", "HRNetV2-W48 on Cityscapes with OHEM."
    (tmp_path / "config.json").write_text(config_lib.to_json(old))
    assert workdir_lib.config_changes(str(tmp_path), experiments.load("seg_cityscapes:ohem,smoke")) == {}
    with pytest.raises(workdir_lib.ResumeConflict, match="'seg_cityscapes' there, 'seg_lip' now"):
        workdir_lib.config_changes(str(tmp_path), experiments.load("seg_lip:smoke"))


def test_a_users_own_file_with_get_config_and_with_variant_still_loads(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(
        '"""My own run."""\n'
        "from hrnet_jax.experiments import with_variant\n"
        "from hrnet_jax.recipes import synthetic_demo\n\n\n"
        "def get_config(variant=None):\n"
        "    config = synthetic_demo('segmentation', 'segmentation', 5, 'synthetic_segmentation')\n"
        "    return with_variant(config, variant, small=lambda c: setattr(c.model, 'width', 4) or c)\n")
    monkeypatch.setattr(experiments, "EXPERIMENTS_DIR", tmp_path)
    config = experiments.load("mine:small")
    assert (config.name, config.description, config.model.width) == ("mine:small", "My own run.", 4)
    with pytest.raises(ValueError, match="experiment mine: unknown variant 'big'; choose from small"):
        experiments.load("mine:big")
