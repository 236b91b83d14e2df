"""scripts/pipeline_throughput.py on the real COCO sample: one worker's rate of the pose
pipeline, and the workers a step rate read from gpu_benchmark's JSON would need."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "pipeline_throughput.py"


def test_pose_pipeline_rate_and_the_workers_a_measured_gpu_step_needs(shared_data, tmp_path,
                                                                      capsys):
    spec = importlib.util.spec_from_file_location("pipeline_throughput", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    gpu_json = tmp_path / "gpu.jsonl"  # gpu_benchmark's line format (other lines ignored)
    gpu_json.write_text('warming up\n{"case": "pose_w32_b64", "images_per_s": 2500.0}\n')
    [result] = script.main(["--fixtures", str(shared_data), "--cases", "coco_pose",
                            "--batches", "2", "--gpu_json", str(gpu_json)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["image"] == [256, 192]  # the experiment's own crop
    assert result["step_rate_from"] == "gpu_benchmark pose_w32_b64"
    assert result["images_per_s_per_worker"] > 0
    assert result["workers_needed"] == math.ceil(2500.0 / result["images_per_s_per_worker"])
