"""scripts/eval_host_time.py and scripts/remat_memory.py run and print what they promise (the
figures themselves are measurements, not asserted)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_pose_evaluations_host_time_against_the_device(shared_data, capsys):
    """The flip test and OKS-NMS on the sample's detected persons, with a stand-in network that
    counts the crops sent: two 256x192 pictures (the flip) a detected person."""
    script = load("eval_host_time")
    [result] = script.main(["--fixtures", str(shared_data), "--cases", "coco_pose",
                            "--images", "2"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["host_ms_per_image"] > 0 and result["device_ms_per_image"] > 0
    assert result["host_over_device"] == pytest.approx(
        result["host_ms_per_image"] / result["device_ms_per_image"], rel=0.02)


@pytest.mark.slow  # ten compiled train steps: a script for the note's table
def test_remat_memory_reports_every_setting(capsys):
    script = load("remat_memory")
    results = script.main(["--tiny", "--cases", "pose_w32_b64"])
    assert [(r["remat"], r["remat_saves"]) for r in results] == list(script.SETTINGS)
    assert all(r["per_image_mib"] > 0 and r["largest_batch_in_16_gib"] > 0 for r in results)
