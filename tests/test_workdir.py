"""A workdir's recorded settings (hrnet_jax/training/workdir.py): the default of every later
command on it, a `--set` still overriding them."""

from __future__ import annotations

import json

from hrnet_jax import config as config_lib, experiments
from hrnet_jax.main import main
from hrnet_jax.training import workdir as workdir_lib


def printed_config(capsys, *argv) -> config_lib.ExperimentConfig:
    assert main([*argv, "--print_config"]) == 0
    return config_lib.from_dict(json.loads(capsys.readouterr().out))


def test_later_commands_take_the_workdirs_settings_and_a_set_overrides_them(tmp_path, capsys):
    trained = experiments.load("seg_synthetic:smoke")
    trained.data.data_dir, trained.optim.learning_rate = "/data/elsewhere", 0.5
    config_lib.save_json(trained, str(tmp_path / "config.json"))
    spec = ["--experiment=seg_synthetic:smoke", f"--workdir={tmp_path}"]

    later = printed_config(capsys, *spec)
    assert (later.data.data_dir, later.optim.learning_rate) == ("/data/elsewhere", 0.5)
    overridden = printed_config(capsys, *spec, "--set=optim.learning_rate=0.1")
    assert (overridden.data.data_dir, overridden.optim.learning_rate) == ("/data/elsewhere", 0.1)

    # A resume that changed a setting recorded it beside config.json: the latest one holds.
    resumed = experiments.load("seg_synthetic:smoke")
    resumed.data.data_dir, resumed.optim.learning_rate = "/data/elsewhere", 0.7
    config_lib.save_json(resumed, str(tmp_path / "config.step000004.json"))
    assert printed_config(capsys, *spec).optim.learning_rate == 0.7
    assert workdir_lib.config_changes(str(tmp_path), resumed) == {}

    # Another experiment on the workdir is not dressed in its settings (the resume refuses it).
    other = printed_config(capsys, "--experiment=seg_synthetic", f"--workdir={tmp_path}")
    assert other.data.data_dir == experiments.load("seg_synthetic").data.data_dir
