"""Optimizers and schedules against PyTorch, the weight-decay mask, gradient accumulation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from hrnet_jax import experiments, config as config_lib
from hrnet_jax.config import OptimConfig
from hrnet_jax.training import optim, step as step_lib
from hrnet_jax.tasks import make_task


def test_sgd_nesterov_with_weight_decay_matches_torch():
    config = OptimConfig(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                         weight_decay=5e-4)
    tx = optim.make_optimizer(config, 10)
    rng = np.random.RandomState(0)
    w = rng.randn(4, 3).astype(np.float32)
    grads = [rng.randn(4, 3).astype(np.float32) for _ in range(3)]
    params, state = {"w": jnp.asarray(w)}, tx.init({"w": jnp.asarray(w)})
    reference = torch.nn.Parameter(torch.from_numpy(w.copy()))
    torch_sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
        reference.grad = torch.from_numpy(g.copy())
        torch_sgd.step()
    np.testing.assert_allclose(np.asarray(params["w"]), reference.detach().numpy(), rtol=1e-5)


def test_schedules():
    poly = optim.learning_rate_schedule(OptimConfig(learning_rate=0.01, schedule="poly"), 100)
    assert abs(float(poly(30)) - 0.01 * (1 - 30 / 100) ** 0.9) < 1e-9
    steps = optim.learning_rate_schedule(OptimConfig(learning_rate=1e-3, schedule="multistep",
                                                     milestones=(170 / 210, 200 / 210)), 210)
    assert [round(float(steps(s)), 8) for s in (169, 170, 199, 200)] == [1e-3, 1e-4, 1e-4, 1e-5]
    warm = optim.learning_rate_schedule(OptimConfig(learning_rate=0.1, schedule="cosine",
                                                    warmup_steps=10), 110)
    assert abs(float(warm(5)) - 0.05) < 1e-7 and abs(float(warm(10)) - 0.1) < 1e-7
    assert float(warm(110)) < 1e-7


def test_decay_mask_spares_batchnorm_and_biases():
    params = {"conv": {"kernel": 1, "bias": 2}, "bn": {"scale": 3, "bias": 4}}
    assert optim.decay_mask(params) == {"conv": {"kernel": True, "bias": False},
                                        "bn": {"scale": False, "bias": False}}


class ConvBatchNormSegmenter(nn.Module):
    """The parts accumulation interacts with (parameters and BatchNorm statistics), small enough
    that the check compiles in a second; the trainer's own models run it in the smoke tests."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        return nn.Conv(5, (1, 1))(x)


def test_gradient_accumulation_averages_micro_batch_gradients():
    config = experiments.load("seg_synthetic:smoke")
    config_lib.apply_override(config, "optim.grad_accum_steps=2")
    model, task = ConvBatchNormSegmenter(), make_task(config)
    tx = optim.make_optimizer(config.optim, 10)
    state = step_lib.init_state(model, tx, (32, 32, 3), 0)
    rng = np.random.RandomState(0)
    batch = {"image": jnp.asarray(rng.randn(4, 32, 32, 3), jnp.float32),
             "label": jnp.asarray(rng.randint(0, 5, (4, 32, 32)))}
    accumulated, _ = jax.jit(step_lib.make_train_step(model, tx, task, 2))(state, batch)

    def grads_of(half, batch_stats):
        def loss(params):
            out, upd = model.apply({"params": params, "batch_stats": batch_stats}, half["image"],
                                   train=True, mutable=["batch_stats"])
            return task.loss(out, half)[0], upd["batch_stats"]
        return jax.grad(loss, has_aux=True)(state["params"])

    grads_of = jax.jit(grads_of)

    first = {k: v[:2] for k, v in batch.items()}
    second = {k: v[2:] for k, v in batch.items()}
    g1, stats = grads_of(first, state["batch_stats"])
    g2, stats = grads_of(second, stats)
    updates, _ = tx.update(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2), state["opt_state"],
                           state["params"])
    expected = optax.apply_updates(state["params"], updates)
    for ours, theirs in zip(jax.tree.leaves(accumulated["params"]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-4, atol=1e-6)
    for ours, theirs in zip(jax.tree.leaves(accumulated["batch_stats"]), jax.tree.leaves(stats)):
        # Running variances are E[x^2] - E[x]^2 of 2-image micro-batches: rounding shows at 1e-4.
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=2e-3, atol=1e-5)
