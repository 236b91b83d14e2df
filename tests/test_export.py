"""The `hrnet-jax` command and the served model: export, then predict in a fresh process with
jax alone, exactly as the README shows."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import cv2
import numpy as np

from hrnet_jax import cli, experiments
from hrnet_jax.data.pipeline import normalize
from hrnet_jax.training.loop import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_exported_model_predicts_in_a_fresh_process_with_jax_alone(tmp_path):
    workdir, artifact = tmp_path / "run", tmp_path / "model.jax"
    assert cli.main(["export", "seg_synthetic:smoke", "--workdir", str(workdir), "--from_init",
                     "--output", str(artifact)]) == 0
    info = json.loads((tmp_path / "model.jax.json").read_text())
    assert info["task"] == "segmentation" and info["input"]["batch"] == "any"
    assert info["outputs"]["arrays"] == ["float32[b, 16, 16, 5]"]
    assert set(info["platforms"]) == {"cpu", "cuda", "tpu"}
    picture = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "street.png"), picture[..., ::-1])

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- export-example.*?-->\n```python\n(.*?)```", readme, re.S).group(1)
    script = block.replace('"model.jax', f'"{artifact}').replace('"street.png"',
                                                                  f'"{tmp_path / "street.png"}"')
    script += import_check(tmp_path / "logits.npy")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"\{'[0-4]': \d+", result.stdout)

    trainer = Trainer(experiments.load("seg_synthetic:smoke"), str(workdir))
    expected = trainer.predict_fn(trainer.init_fn())(normalize(picture)[None])
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-4, atol=1e-4)


def import_check(output: pathlib.Path) -> str:
    """Appended to the README's block: nothing but jax (and Pillow) was imported; the logits."""
    return ("\nimport sys\n"
            "loaded = {name.split('.')[0] for name in sys.modules}\n"
            "assert not loaded & {'flax', 'hrnet_jax', 'tensorflow', 'torch', 'optax'}, loaded\n"
            f"np.save({str(output)!r}, logits)\n")
