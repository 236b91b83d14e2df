"""The `hrnet-jax` command and the served model: export, then predict in a fresh process with
jax alone, exactly as the README shows."""

from __future__ import annotations

import json
import pathlib
import re

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from conftest import run_readme_block
from hrnet_jax import cli, experiments
from hrnet_jax.data.pipeline import normalize
from hrnet_jax.models import create_model, tiny_arch
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

    output, logits = run_readme_block(
        "export-example", {'"model.jax': f'"{artifact}', '"street.png"': f'"{tmp_path / "street.png"}"'},
        {"flax", "hrnet_jax", "tensorflow", "torch", "optax"}, tmp_path)
    assert re.search(r"\{'[0-4]': \d+", output)

    trainer = Trainer(experiments.load("seg_synthetic:smoke"), str(workdir))
    expected = trainer.predict_fn(trainer.init_fn())(normalize(picture)[None])
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


SMALL = dict(channels=32, proposals=40, train_pre_nms=40, train_proposals=40, rois=32)


def test_exported_two_stage_detector_takes_each_images_size_and_clips_to_it():
    """The served artifact of a two-stage detector takes (images, image_sizes) and returns what
    the model returns, boxes inside each image's own size; any batch size. (Faster R-CNN: the
    cascades detect through the same code, checked above.)"""
    from hrnet_jax import surgery

    model = create_model(tiny_arch(4), "faster_rcnn", 3, detector=dict(SMALL, proposals=20),
                         inference=dict(score_threshold=0.0, nms_threshold=0.5, detections=10,
                                        pre_nms=60))
    images = jnp.asarray(np.random.default_rng(4).normal(size=(2, 64, 64, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), images[:1])
    exported = surgery.export_inference(model, variables, (64, 64))
    restored = surgery.load_exported(exported.serialize())
    sizes = jnp.array([[64, 40], [24, 64]], jnp.int32)
    served = restored.call(images, sizes)
    direct = jax.jit(model.apply)(variables, images, image_sizes=sizes)  # (eager: op by op)
    np.testing.assert_allclose(served["boxes"], direct["boxes"], atol=1e-4)
    boxes = np.asarray(served["boxes"])
    assert boxes[0, :, 2].max() <= 40 + 1e-4 and boxes[1, :, 3].max() <= 24 + 1e-4
    assert boxes[0, :, 2].max() > 30  # the box regressions reach the clipped edge
