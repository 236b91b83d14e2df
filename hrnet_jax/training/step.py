"""The train state (a plain dict pytree) and the jitted, sharded train / eval steps."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hrnet_jax.data.pipeline import normalize_on_device
from hrnet_jax.tasks import Task

State = dict[str, Any]  # {'step', 'params', 'batch_stats', 'opt_state'}


def network_input(images: jnp.ndarray) -> jnp.ndarray:
    """The network's normalised input: the loaders' uint8 images are normalised here, on the
    device (a quarter of the bytes batched, copied between processes and sent; the host's
    table, so the same values); float images arrive normalised (mixup's blends, inference)."""
    return normalize_on_device(images) if images.dtype == jnp.uint8 else images


def init_state(model: nn.Module, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
               seed: int) -> State:
    variables = model.init(jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32),
                           train=False)
    return {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
            "batch_stats": variables["batch_stats"], "opt_state": tx.init(variables["params"])}


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, task: Task,
                    grad_accum_steps: int = 1, seed: int = 0
                    ) -> Callable[[State, dict], tuple[State, dict]]:
    """One optimizer update. With `grad_accum_steps` k the batch is split into k micro-batches
    whose gradients are averaged (BatchNorm statistics then come from each micro-batch).
    Dropout (HRNet-OCR's) and sampling (Faster R-CNN's) draw from `seed` and the step: a resumed
    run draws the same."""

    def loss_fn(params, batch_stats, batch, dropout_key):
        outputs, updates = model.apply({"params": params, "batch_stats": batch_stats},
                                       network_input(batch["image"]), train=True,
                                       mutable=["batch_stats"],
                                       rngs={"dropout": dropout_key}, **task.model_inputs(batch))
        loss, figures = task.loss(outputs, batch)
        return loss, (updates["batch_stats"], figures)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: State, batch: dict) -> tuple[State, dict]:
        dropout_key = jax.random.fold_in(jax.random.key(seed), state["step"])
        if grad_accum_steps == 1:
            (loss, (batch_stats, figures)), grads = grad_fn(state["params"], state["batch_stats"],
                                                            batch, dropout_key)
        else:
            micro = jax.tree.map(lambda x: x.reshape(grad_accum_steps, -1, *x.shape[1:]), batch)

            def accumulate(carry, indexed):
                grads_sum, loss_sum, stats = carry
                index, micro_batch = indexed
                (loss, (stats, _)), grads = grad_fn(state["params"], stats, micro_batch,
                                                    jax.random.fold_in(dropout_key, index))
                return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss, stats), None

            zeros = jax.tree.map(jnp.zeros_like, state["params"])
            (grads, loss, batch_stats), _ = jax.lax.scan(
                accumulate, (zeros, jnp.zeros((), jnp.float32), state["batch_stats"]),
                (jnp.arange(grad_accum_steps), micro))
            grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
            loss, figures = loss / grad_accum_steps, {}
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
                     "batch_stats": batch_stats, "opt_state": opt_state}
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **figures}

    return train_step


def make_eval_step(model: nn.Module, task: Task) -> Callable[[State, dict], dict]:
    def eval_step(state: State, batch: dict) -> dict:
        outputs = model.apply({"params": state["params"], "batch_stats": state["batch_stats"]},
                              network_input(batch["image"]), train=False)
        return task.eval_sums(outputs, batch)
    return eval_step


def make_predict(model: nn.Module, postprocess: Callable[[Any], Any] | None = None
                 ) -> Callable[[State, jnp.ndarray], Any]:
    """Inference; `postprocess` (the task's, e.g. detection's decoding + NMS) runs on the
    device in the same program."""
    def predict(state: State, images: jnp.ndarray, image_sizes: jnp.ndarray | None = None
                ) -> Any:
        """`image_sizes` (N, 2): each image's height and width in its padded canvas (the
        detectors clip to it)."""
        outputs = model.apply({"params": state["params"], "batch_stats": state["batch_stats"]},
                              network_input(images), train=False, image_sizes=image_sizes)
        return outputs if postprocess is None else postprocess(outputs)
    return predict


class Network:
    """The model in inference mode as the tasks call it (hrnet_jax.tasks.Predict): normalised
    images (N, H, W, 3), and for the detectors each image's size in its canvas (N, 2), ->
    outputs as numpy. `on_device`: the same outputs left on the device, for inference that goes
    on working on them there (segmentation's multi-scale scores)."""

    def __init__(self, inference: Callable[..., Any], state: State):
        """`inference`: jitted `make_predict`; `state`: at least its params and batch_stats."""
        self.inference, self.state = inference, state

    def on_device(self, images: Any, image_sizes: Any = None) -> Any:
        sizes = None if image_sizes is None else jnp.asarray(image_sizes, jnp.int32)
        return self.inference(self.state, jnp.asarray(images), sizes)

    def __call__(self, images: Any, image_sizes: Any = None) -> Any:
        return jax.device_get(self.on_device(images, image_sizes))
