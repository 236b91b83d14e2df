"""scripts/gpu_benchmark.py end to end at tiny sizes on this CPU, so that it works the first time
an accelerator is at hand: every case prints its JSON line with both frameworks' figures."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "gpu_benchmark.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # the CI budget: a script for lent accelerators, every case compiled here
def test_every_kind_of_case_runs_at_tiny_sizes_and_prints_its_json(capsys):
    """Segmentation, pose and classification (the two segmentation cases differ only in their
    batch, which --tiny sets to 2)."""
    benchmark = load_script()
    cases = ["seg_w48_b3", "pose_w32_b64", "cls_w18_b256"]
    results = benchmark.main(["--tiny", "--steps", "1", "--cases", ",".join(cases)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == results
    assert [r["case"] for r in results] == cases
    for result in results:
        assert result["images_per_s"] > 0 and result["torch_images_per_s"] > 0
        assert result["ratio_jax_over_torch"] == pytest.approx(
            result["images_per_s"] / result["torch_images_per_s"], rel=1e-2)
        assert result["compile_s"] > 0 and result["macs_per_image"] > 0
        assert result["mfu"] is None  # no bf16 peak is known for a CPU


def test_a_wrong_case_lists_the_real_ones(capsys):
    with pytest.raises(SystemExit):
        load_script().main(["--cases", "seg_w99"])
    assert "seg_w48_b3" in capsys.readouterr().err


def test_the_torch_networks_are_timms_presets():
    """timm's HRNet config built from our ArchSpec is timm's own table for every preset (the
    tiny arch is built the same way; timm's stem always widens to 64 channels)."""
    from timm.models import hrnet as timm_hrnet

    from hrnet_jax.models import ARCHS

    benchmark = load_script()
    for name, arch in ARCHS.items():
        assert benchmark.timm_config(arch) == timm_hrnet.cfg_cls[name], name
