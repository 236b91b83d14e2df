"""`--mode=export --output=FILE`: a run's checkpoint as a self-contained inference artifact,
StableHLO (the default) or ONNX (`--format=onnx`, hrnet_jax.onnx_export).

StableHLO: FILE holds the serialised StableHLO of the network in inference mode with its weights inside
and the task's post-processing (detection: decoding and NMS) in the same program; the batch size
is symbolic. FILE.json beside it says what a server needs: the task, the input layout and size,
the normalisation, and the class or keypoint names. It is lowered for CPU, CUDA and TPU, with
every BatchNorm folded into the conv before it (`surgery.fold_batchnorm`: the same outputs from
fewer operations). Loading it needs jax only:

    exported = jax.export.deserialize(bytearray(open(FILE, "rb").read()))
    outputs = exported.call(images)   # (b, H, W, 3) float32, normalised as FILE.json says

ONNX: the same network (a detector's NMS as ONNX's own), for onnxruntime alone:

    session = onnxruntime.InferenceSession(FILE)
    outputs = session.run(None, {"images": images})
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np

from hrnet_jax import storage, surgery
from hrnet_jax.data.pipeline import IMAGENET_MEAN, IMAGENET_STD


def describe(trainer: Any, step: int, artifact: dict[str, Any]) -> dict[str, Any]:
    """The artifact's JSON: what goes in, what comes out (`artifact`: the format's own
    entries, its outputs among them), what the outputs mean."""
    config, dataset = trainer.config, trainer.task.dataset
    height, width = config.data.image_size
    labels: dict[str, Any] = {}
    if dataset.keypoints is not None:
        labels["keypoints"] = list(dataset.keypoints.joints)
        labels["skeleton"] = [list(limb) for limb in dataset.keypoints.limbs]
        labels["flip_pairs"] = [list(pair) for pair in dataset.keypoints.flip_pairs]
    else:
        labels["classes"] = dataset.names(config.model.num_classes)
    return {
        "experiment": config.name, "task": config.task, "arch": config.model.arch,
        "head": config.model.head, "dataset": dataset.name, "step": step,
        "input": {"layout": "NHWC", "dtype": "float32", "height": height, "width": width,
                  "batch": "any", "channels": "RGB",
                  "normalise": "(pixel - mean) / std, pixels 0..255",
                  "mean": [round(float(v), 4) for v in IMAGENET_MEAN],
                  "std": [round(float(v), 4) for v in IMAGENET_STD]},
        **artifact,
        **labels,
    }


def stablehlo_artifact(model: Any, variables: dict, trainer: Any,
                       platforms: tuple[str, ...]) -> tuple[bytes, dict[str, Any]]:
    exported = surgery.export_inference(model, variables, tuple(trainer.config.data.image_size),
                                        np.float32, trainer.task.postprocess, platforms)
    entries = {
        "format": "stablehlo",
        **({"image_sizes": {"shape": "(batch, 2)", "dtype": "int32",
                            "meaning": "each image's height and width inside the padded "
                                       "input, where its boxes are clipped; the second "
                                       "argument of exported.call"}}
           if len(exported.in_avals) > 1 else {}),
        "outputs": {"tree": str(exported.out_tree),
                    "arrays": [f"{a.dtype}{list(a.shape)}" for a in exported.out_avals]},
        "platforms": list(exported.platforms)}
    return bytes(exported.serialize()), entries


def onnx_artifact(model: Any, variables: dict, trainer: Any) -> tuple[bytes, dict[str, Any]]:
    from hrnet_jax import onnx_export

    proto = onnx_export.convert(model, variables, tuple(trainer.config.data.image_size),
                                trainer.task)
    entries = {"format": "onnx", "opset": max(o.version for o in proto.opset_import),
               "input_name": onnx_export.INPUT,
               "outputs": onnx_export.output_arrays(proto)}
    return proto.SerializeToString(), entries


PLATFORMS = ("cpu", "cuda", "tpu")  # where the StableHLO artifact runs; lowered for each here
FORMATS = {"stablehlo": "model.jax", "onnx": "model.onnx"}  # format -> default file name


def export_run(trainer: Any, path: str, format: str = "stablehlo",
               platforms: tuple[str, ...] = PLATFORMS) -> tuple[str, str]:
    """Write the trainer's latest checkpoint (or its initialisation) as FILE, in `format`
    (FORMATS), and FILE.json."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if format == "onnx":
        from hrnet_jax import onnx_export

        onnx_export.check_convertible(trainer.config.model.head)
    state = trainer.restore_or_init()
    step = int(jax.device_get(state["step"]))
    variables = jax.device_get({"params": state["params"], "batch_stats": state["batch_stats"]})
    model, variables = surgery.fold_batchnorm(trainer.model, variables)
    data, entries = (onnx_artifact(model, variables, trainer) if format == "onnx"
                     else stablehlo_artifact(model, variables, trainer, platforms))
    with storage.errors_named(path, "write"):  # FILE may be in a bucket
        storage.write_atomic(path, data)
        storage.write_atomic(path + ".json", json.dumps(describe(trainer, step, entries),
                                                        indent=2))
    return path, path + ".json"
