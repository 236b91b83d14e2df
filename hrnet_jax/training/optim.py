"""optax optimizers and learning-rate schedules from an `OptimConfig`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from hrnet_jax import surgery
from hrnet_jax.config import OptimConfig


def learning_rate_schedule(config: OptimConfig, num_steps: int) -> optax.Schedule:
    """constant | poly (power p, per iteration, as the segmentation repo) | multistep (x factor
    at each milestone, given as fractions of the run) | cosine; optional linear warmup from
    warmup_start x lr."""
    lr = config.learning_rate
    decay_steps = max(num_steps - config.warmup_steps, 1)
    if config.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif config.schedule == "poly":
        schedule = optax.polynomial_schedule(lr, 0.0, config.poly_power, decay_steps)
    elif config.schedule == "multistep":
        boundaries = {int(round(m * num_steps)) - config.warmup_steps: config.decay_factor
                      for m in config.milestones}
        schedule = optax.piecewise_constant_schedule(lr, boundaries)
    elif config.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, decay_steps)
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}; "
                         "choose constant, poly, multistep or cosine")
    if config.warmup_steps:
        warmup = optax.linear_schedule(config.warmup_start * lr, lr, config.warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [config.warmup_steps])
    return schedule


def decay_mask(params) -> dict:
    """True for conv and dense kernels; False for BatchNorm scales/offsets and biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(config: OptimConfig, num_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(config, num_steps)
    mask = None if config.decay_norm_and_bias else decay_mask
    if config.optimizer == "sgd":
        # Coupled L2 as torch.optim.SGD(weight_decay=...): added to the gradient before momentum.
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay, mask),
                         optax.sgd(schedule, momentum=config.momentum or None,
                                   nesterov=config.nesterov))
    elif config.optimizer == "adam":
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay, mask),
                         optax.adam(schedule))
    elif config.optimizer == "adamw":
        tx = optax.adamw(schedule, weight_decay=config.weight_decay, mask=mask)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose sgd, adam or adamw")
    if config.clip_grad_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.clip_grad_norm), tx)
    return surgery.freeze(tx, config.freeze)


def current_learning_rate(config: OptimConfig, num_steps: int, step: int) -> float:
    return float(jnp.asarray(learning_rate_schedule(config, num_steps)(step)))
