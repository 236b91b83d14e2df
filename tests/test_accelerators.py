"""The accelerator path, checked on this CPU machine: the real train step and the inference of
small HRNets lower for CUDA and TPU. `jax.export` refuses custom calls without a cross-platform
guarantee (host callbacks, CPU-only kernels) and any operation a platform cannot lower, so a
CPU-only construct fails here before it reaches a GPU or a pod."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax import config as config_lib, experiments
from hrnet_jax.data import datasets
from hrnet_jax.tasks import make_task
from hrnet_jax.training import optim, step as step_lib
from hrnet_jax.training.loop import build_model

PLATFORMS = ("cuda", "tpu")


def abstract_batch(config, task, size: int = 2) -> dict:
    """The shapes of a training batch, from one real example of the experiment's data (uint8
    images: the step normalises them)."""
    source, _ = datasets.get(config.data.name).sources(config.data)
    example = task.prepare(dict(source[0]))
    return {k: jax.ShapeDtypeStruct((size, *np.shape(v)), np.asarray(v).dtype)
            for k, v in example.items()}


# The segmentation demo (and with it the OCR head) and the pose demo, in bfloat16 as the
# experiments' docstrings tell accelerator users to run.
@pytest.mark.parametrize("spec,head", [("seg_synthetic:smoke", "segmentation"),
                                       ("seg_synthetic:smoke", "segmentation_ocr"),
                                       ("pose_synthetic:smoke", "pose")])
def test_train_step_and_inference_lower_for_cuda_and_tpu(spec, head):
    config = experiments.load(spec)
    config_lib.apply_override(config, f"model.head={head}")
    config_lib.apply_override(config, "model.dtype=bfloat16")
    model, task = build_model(config), make_task(config)
    tx = optim.make_optimizer(config.optim, config.loop.num_steps)
    batch = abstract_batch(config, task)
    image_shape = batch["image"].shape[1:]
    state = jax.eval_shape(lambda: step_lib.init_state(model, tx, image_shape, 0))

    train = jax.export.export(jax.jit(step_lib.make_train_step(model, tx, task)),
                              platforms=PLATFORMS)(state, batch)
    assert train.platforms == PLATFORMS
    assert {"loss", "grad_norm"} <= set(train.out_tree.unflatten(train.out_avals)[1])
    predict = jax.export.export(jax.jit(step_lib.make_predict(model, task.postprocess)),
                                platforms=PLATFORMS)(state, batch["image"])
    out = jax.tree.leaves(predict.out_avals)
    assert out[0].shape[0] == 2 and all(a.dtype != jnp.float64 for a in out)
    # Parameters and BatchNorm statistics stay float32 in the lowered step (bfloat16 compute).
    new_state = train.out_tree.unflatten(train.out_avals)[0]
    assert {a.dtype for a in jax.tree.leaves(new_state["params"])} == {jnp.dtype("float32")}
    assert {a.dtype for a in jax.tree.leaves(new_state["batch_stats"])} == {jnp.dtype("float32")}


def test_every_paper_scale_experiment_tells_accelerator_users_to_compute_in_bfloat16():
    for path in sorted(experiments.EXPERIMENTS_DIR.glob("*.py")):
        if "synthetic" not in path.name:
            assert "--set model.dtype=bfloat16" in path.read_text(), path.name
