"""`export --format=onnx`: onnxruntime's outputs equal the JAX model's for every head that
converts, the exported FCOS detects what ours does on the COCO sample, the README's
onnxruntime-only block runs, and what cannot be converted is refused naming why."""

from __future__ import annotations

import json
import pathlib
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime
import pytest

from conftest import (coco_detection_records, detection_smoke_config, relative_error,
                      run_readme_block)
from hrnet_jax import cli, config as config_lib, experiments, onnx_export, surgery
from hrnet_jax.data.pipeline import normalize
from hrnet_jax.export import export_run
from hrnet_jax.models import create_model, tiny_arch
from hrnet_jax.training.loop import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
NO_POSTPROCESS = types.SimpleNamespace(before_nms=None, postprocess=None)


def session_of(proto) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(proto.SerializeToString(),
                                        providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("head,classes", [("classification", 10), ("segmentation", 5),
                                          ("segmentation_ocr", 5), ("pose", 17),
                                          ("landmarks", 98)])
def test_onnxruntime_equals_the_jax_model(head, classes):
    """The BatchNorm-folded, converted network in onnxruntime against the unfolded JAX model
    (weights and statistics moved off their initialisation, so that folding matters), for two
    batch sizes: the batch
    dimension is dynamic."""
    model = create_model(tiny_arch(4), head, classes)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(3, 64, 64, 3)), jnp.float32)
    variables = jax.jit(model.init, static_argnames="train")(jax.random.key(0), images[:1],
                                                             train=False)
    variables = jax.tree.map(  # zero-initialised classifiers and unit statistics no more
        lambda x: x + 0.1 * jax.random.uniform(jax.random.key(1), x.shape), variables)
    proto = onnx_export.convert(*surgery.fold_batchnorm(model, variables), (64, 64),
                                NO_POSTPROCESS)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = session_of(proto)
    expected = jax.jit(model.apply, static_argnames="train")(variables, images, train=False)
    for batch in (1, 3):
        served, = session.run(None, {"images": np.asarray(images[:batch])})
        assert relative_error(served, expected[:batch]) <= 1e-4


def test_a_part_the_converter_cannot_express_names_the_head_and_the_converter_error():
    """A loop under vmap (our NMS's shape) stops jax2onnx; the error names the head and what
    the converter said, and points at StableHLO."""
    model = create_model(tiny_arch(4), "segmentation", 3)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)

    def looped(outputs):
        return jax.vmap(lambda x: jax.lax.fori_loop(0, 2, lambda i, y: y * x, x))(outputs)

    task = types.SimpleNamespace(before_nms=None, postprocess=looped)
    with pytest.raises(onnx_export.ExportError, match=r"segmentation head: jax2onnx stopped at .*"
                                                      r"--format=stablehlo"):
        onnx_export.convert(*surgery.fold_batchnorm(model, variables), (32, 32), task)


def test_the_r_cnns_are_refused_before_any_work(tmp_path, capsys):
    code = cli.main(["export", "inst_synthetic:smoke", "--workdir", str(tmp_path / "run"),
                     "--from_init", "--format=onnx"])
    error = capsys.readouterr().err
    assert code == 2
    assert "cannot export the mask_rcnn head: the RPN's proposal NMS" in error
    assert "--format=stablehlo" in error
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_output_names_follow_the_output_tree():
    assert onnx_export.output_names(jnp.zeros(2)) == ["outputs"]
    tree = {"class_logits": [jnp.zeros(1), jnp.zeros(1)], "centerness": [jnp.zeros(1)]}
    assert onnx_export.output_names(tree) == ["centerness_0", "class_logits_0",
                                              "class_logits_1"]


def same_detections(served: dict, ours: dict) -> None:
    """The same detections, an image's order aside: scores differing in the last float digit
    between onnxruntime and XLA may swap two detections."""
    assert len(served["scores"]) == len(ours["scores"])
    np.testing.assert_allclose(np.sort(served["scores"]), np.sort(ours["scores"]), atol=1e-5)
    for box, score, label in zip(served["boxes"], served["scores"], served["labels"]):
        match = ((ours["labels"] == label) & (np.abs(ours["scores"] - score) <= 1e-5)
                 & (np.abs(ours["boxes"] - box).max(-1) <= 1e-2))
        assert match.any(), (box, score, label)


def test_exported_fcos_detects_what_ours_does_on_the_coco_sample(coco_detection_data, tmp_path):
    """FCOS (the smoke experiment on the real sample, a threshold low enough that every
    candidate of the initialisation is scored and ONNX's NMS has work to do) through the task's
    own pre- and post-processing: onnxruntime's detections are ours."""
    config = detection_smoke_config(coco_detection_data)
    config_lib.apply_override(config, "eval.score_threshold=0.001")
    trainer = Trainer(config, str(tmp_path / "run"))
    path, description = export_run(trainer, str(tmp_path / "fcos.onnx"), "onnx")
    info = json.loads(pathlib.Path(description).read_text())
    detections = config.eval.max_detections
    assert info["format"] == "onnx" and info["outputs"] == {
        "boxes": f"float32['batch', {detections}, 4]", "scores": f"float32['batch', {detections}]",
        "classes": f"int32['batch', {detections}]", "valid": f"bool['batch', {detections}]"}
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def served(images, image_sizes=None):  # the task sends uint8 pictures; the file takes
        images = normalize(images)            # normalised floats, as the README's recipe
        return dict(zip(onnx_export.NMS_OUTPUTS, session.run(None, {"images": images})))

    ours = trainer.predict_fn(trainer.restore_or_init())
    records = coco_detection_records(coco_detection_data)
    found = 0
    for index in range(min(4, len(records))):
        image = records[index]["image"]
        expected = trainer.task.detect(ours, image)
        same_detections(trainer.task.detect(served, image), expected)
        found += len(expected["scores"])
    assert found > 20  # NMS had candidates to choose among


def test_the_readme_runs_the_onnx_file_with_onnxruntime_alone(tmp_path):
    workdir, artifact = tmp_path / "run", tmp_path / "model.onnx"
    assert cli.main(["export", "seg_synthetic:smoke", "--workdir", str(workdir), "--from_init",
                     "--format=onnx", "--output", str(artifact)]) == 0
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["format"] == "onnx" and info["input_name"] == "images"
    assert info["outputs"] == {"outputs": "float32['batch', 16, 16, 5]"}
    picture = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    from PIL import Image

    Image.fromarray(picture).save(tmp_path / "street.png")
    output, logits = run_readme_block(
        "onnx-example", {'"model.onnx': f'"{artifact}', '"street.png"': f'"{tmp_path / "street.png"}"'},
        {"jax", "flax", "hrnet_jax", "tensorflow", "torch"}, tmp_path)
    assert re.search(r"\{'[0-4]': \d+", output)

    trainer = Trainer(experiments.load("seg_synthetic:smoke"), str(workdir))
    expected = trainer.predict_fn(trainer.init_fn())(normalize(picture)[None])
    assert relative_error(logits, expected) <= 1e-4
