"""`export --format=onnx`: a run's network as an ONNX model, for onnxruntime, TensorRT, OpenVINO.

The converter is jax2onnx, which converts JAX functions (Flax Linen modules included) straight
to ONNX. The alternative, jax2tf then tf2onnx, needs TensorFlow at export time and converts a
TensorFlow graph of our program rather than the program itself, and tf2onnx is no longer kept
up with TensorFlow. jax2onnx is pinned to 0.13.0: its later releases require orbax-checkpoint
< 0.11.37, which this project's checkpoints have outgrown.

What is converted: the network in inference mode with every BatchNorm folded into its conv
(`surgery.fold_batchnorm`), batch dimension dynamic ("batch"). One input, `images` (batch, H,
W, 3) float32 normalised as FILE.json says; the outputs named by their place in the model's
output tree (`outputs` for a single array; `class_logits_0`, ... for a tree).

The detectors: FCOS's decoding converts but our NMS's loop (a fori_loop under vmap) does not,
so the graph ends in ONNX's own NonMaxSuppression over the decoded candidates, then keeps the
best `max_detections` of an image in score order, as ours does: boxes (batch, D, 4), scores,
classes (-1: none) and valid, equal to the StableHLO artifact's. The R-CNNs select their
proposals by NMS inside the network and are refused, naming it: export them as StableHLO.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

BATCH = "batch"  # the name of the dynamic batch dimension
INPUT = "images"
NMS_OUTPUTS = ("boxes", "scores", "classes", "valid")


class ExportError(ValueError):
    """What cannot be exported, and why."""


def check_convertible(head: str | None) -> None:
    """Refuse, before any work, a head known not to convert, or a missing converter."""
    from hrnet_jax.models.detectors import DETECTORS

    detector = DETECTORS.get(head)
    if detector is not None and detector.onnx_blocker:
        raise ExportError(f"--format=onnx cannot export the {head} head: "
                          f"{detector.onnx_blocker}. Export it with --format=stablehlo.")
    try:
        import jax2onnx  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as error:
        raise ExportError(f"--format=onnx needs the onnx extra ({error}): pip install -c "
                          "constraints.txt -e '.[onnx]'") from None


def convert(model: Any, variables: dict, image_size: tuple[int, int], task: Any) -> Any:
    """The folded `model` with `variables` ({'params'}) as an onnx.ModelProto for inputs of
    `image_size`; a detector's `task.before_nms` ends it in ONNX's NonMaxSuppression."""
    check_convertible(model.head)
    cut = task.before_nms
    after = cut.candidates if cut is not None else task.postprocess

    def infer(images):
        outputs = model.apply(variables, images, train=False)
        return outputs if after is None else after(outputs)

    height, width = image_size
    example = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    names = output_names(jax.eval_shape(infer, example))
    if cut is not None:  # NMS's inputs, inside the graph
        names = [f"candidate_{name}" for name in names]
    proto = _to_onnx(infer, (BATCH, height, width, 3), names, model.head)
    # The converter's shape annotations of intermediate values are optional and not always
    # right (NHWC and NCHW mixed around its transposes); runtimes infer their own.
    del proto.graph.value_info[:]
    if cut is not None:
        proto = append_nms(proto, cut.iou_threshold, cut.max_detections,
                           int(model.num_classes))
    import onnx

    onnx.checker.check_model(proto)
    return proto


def output_names(tree: Any) -> list[str]:
    """Names of a tree's leaves: `outputs` for a single array, else their keys joined by _."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if len(leaves) == 1 and not leaves[0][0]:
        return ["outputs"]

    def part(key: Any) -> str:
        return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

    return ["_".join(part(key) for key in path) for path, _ in leaves]


def _to_onnx(infer: Any, shape: tuple, names: list[str], head: str) -> Any:
    import jax2onnx

    # jax2onnx prints a line a conv and warns of plugins it skips (dm_pix's, unused here) and
    # of shape annotations it leaves out; none of it is the user's to act on.
    quiet = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return jax2onnx.to_onnx(infer, inputs=[shape], model_name=f"hrnet_{head}",
                                    input_names=[INPUT], output_names=names)
    except Exception as error:  # the converter's own exceptions name the JAX primitive
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"--format=onnx cannot export the {head} head: jax2onnx stopped at "
                          f"{type(error).__name__}: {first}. Export it with "
                          "--format=stablehlo.") from error
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def append_nms(proto: Any, iou_threshold: float, max_detections: int, num_classes: int) -> Any:
    """Replace the graph's outputs, candidates boxes (B, K, 4), scores (B, K) and classes
    (B, K), with their class-wise NMS: ONNX's NonMaxSuppression on scores spread over the
    classes (B, C, K), the survivors' scores scattered back over (B, K), the best
    `max_detections` of them (TopK, so in score order) gathered. Returns the new model."""
    from onnx import TensorProto, helper

    graph = proto.graph
    boxes, scores, classes = "candidate_boxes", "candidate_scores", "candidate_classes"
    shape = {output.name: output.type.tensor_type.shape for output in graph.output}[scores]
    count = shape.dim[1].dim_value
    kept = min(count, max_detections)

    def const(name: str, values: Any, dtype: Any) -> str:
        graph.initializer.append(helper.make_tensor(f"nms/{name}", dtype,
                                                    np.shape(values), np.ravel(values)))
        return f"nms/{name}"

    def node(op: str, inputs: list[str], outputs: int | list[str] = 1, **attributes: Any
             ) -> list[str]:
        names = ([f"nms/{op}{len(graph.node)}_{i}" for i in range(outputs)]
                 if isinstance(outputs, int) else outputs)
        graph.node.append(helper.make_node(op, inputs, names, **attributes))
        return names

    onehot = node("OneHot", [node("Cast", [classes], to=TensorProto.INT64)[0],
                             const("depth", [num_classes], TensorProto.INT64),
                             const("onehot_values", [0.0, 1.0], TensorProto.FLOAT)])[0]
    spread = node("Mul", [node("Unsqueeze", [scores, const("axis2", [2], TensorProto.INT64)])[0],
                          onehot])[0]
    per_class = node("Transpose", [spread], perm=[0, 2, 1])[0]  # (B, C, K)
    selected = node("NonMaxSuppression", [boxes, per_class,
                                          const("per_class", [count], TensorProto.INT64),
                                          const("iou", [iou_threshold], TensorProto.FLOAT),
                                          const("min_score", [0.0], TensorProto.FLOAT)])[0]
    batch_box = node("Gather", [selected, const("batch_box", [0, 2], TensorProto.INT64)],
                     axis=1)[0]  # (N, 2): image and candidate of each survivor
    zeros = node("ConstantOfShape", [node("Shape", [scores])[0]],
                 value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))[0]
    survivors = node("ScatterND", [zeros, batch_box, node("GatherND", [scores, batch_box])[0]])[0]
    top, index = node("TopK", [survivors, const("kept", [kept], TensorProto.INT64)], 2, axis=1)
    index = node("Unsqueeze", [index, "nms/axis2"])[0]
    valid = node("Greater", [top, const("zero_score", 0.0, TensorProto.FLOAT)])[0]
    chosen_boxes = node("GatherND", [boxes, index], batch_dims=1)[0]
    chosen_classes = node("GatherND", [classes, index], batch_dims=1)[0]
    results = {
        "boxes": node("Mul", [chosen_boxes, node("Unsqueeze", [node(
            "Cast", [valid], to=TensorProto.FLOAT)[0], "nms/axis2"])[0]])[0],
        "scores": top,
        "classes": node("Where", [valid, chosen_classes,
                                  const("none", np.int32(-1), TensorProto.INT32)])[0],
        "valid": valid}
    pads = max_detections - kept  # fewer candidates than detections: padding, as ours
    element = {"boxes": (TensorProto.FLOAT, [BATCH, max_detections, 4]),
               "scores": (TensorProto.FLOAT, [BATCH, max_detections]),
               "classes": (TensorProto.INT32, [BATCH, max_detections]),
               "valid": (TensorProto.BOOL, [BATCH, max_detections])}
    del graph.output[:]
    for name in NMS_OUTPUTS:
        last = 3 if name == "boxes" else 2
        pad_widths = [0, 0, 0][:last] + [0, pads, 0][:last]
        if pads:  # padding's class is -1, as ours
            node("Pad", [results[name], const(f"pad_{name}", pad_widths, TensorProto.INT64),
                         *(["nms/none"] if name == "classes" else [])], [name])
        else:
            node("Identity", [results[name]], [name])
        graph.output.append(helper.make_tensor_value_info(name, *element[name]))
    return proto


def output_arrays(proto: Any) -> dict[str, str]:
    """Each graph output's dtype and shape, as FILE.json states them."""
    from onnx import helper

    arrays = {}
    for output in proto.graph.output:
        tensor = output.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        arrays[output.name] = f"{helper.tensor_dtype_to_np_dtype(tensor.elem_type)}{dims}"
    return arrays
