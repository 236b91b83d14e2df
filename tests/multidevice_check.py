"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_trainer.py).

Trains 3 SGD steps of the tiny segmentation model on one device, on data=8 and on data=4 x fsdp=2,
and prints the largest relative parameter difference of each against one device; then restores
the data=8 run's checkpoint onto a data=4 mesh and prints the largest difference (expected 0).
"""

import json
import sys
import tempfile

import jax
import numpy as np

from hrnet_jax import config as config_lib, experiments
from hrnet_jax.data import pipeline
from hrnet_jax.training import sharding
from hrnet_jax.training.loop import Trainer


def make_config(mesh: tuple[int, int]):
    config = experiments.load("seg_synthetic:smoke")
    # SGD: its update is linear in the gradient. (Adam turns the rounding noise of gradients
    # that are zero in exact arithmetic, e.g. a conv bias before BatchNorm, into full steps.)
    for assignment in ["data.batch_size=8", "optim.warmup_steps=0", "optim.optimizer=sgd",
                       "optim.learning_rate=0.05", f"mesh.data={mesh[0]}", f"mesh.fsdp={mesh[1]}"]:
        config_lib.apply_override(config, assignment)
    return config


def run(mesh: tuple[int, int], devices, workdir: str):
    trainer = Trainer(make_config(mesh), workdir, devices)
    state = trainer.init_fn()
    iterator = iter(pipeline.train_loader(trainer.train_source, trainer.task.prepare, 8, 0))
    for _ in range(3):
        state, _ = trainer.train_step(state, sharding.global_batch(trainer.mesh, next(iterator)))
    trainer.save(state, iterator, force=True)
    trainer.checkpoints.wait()
    return trainer, state


def max_relative(a, b) -> float:
    """Largest parameter difference relative to the largest parameter (leaves of one tree)."""
    scale = max(float(np.abs(np.asarray(y)).max()) for y in jax.tree.leaves(b))
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))) / scale


def main():
    devices = jax.devices()
    assert len(devices) == 8, devices
    _, single = run((1, 1), devices[:1], tempfile.mkdtemp())
    workdir8 = tempfile.mkdtemp()
    _, data8 = run((8, 1), devices, workdir8)
    _, fsdp = run((4, 2), devices, tempfile.mkdtemp())
    sharded = sum(1 for leaf in jax.tree.leaves(fsdp["params"])
                  if "fsdp" in str(leaf.sharding.spec))

    restored = Trainer(make_config((4, 1)), workdir8, devices[:4]).restore_or_init()
    assert len(jax.tree.leaves(restored["params"])[0].sharding.device_set) == 4
    difference = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                     for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(data8)))
    indivisible = make_config((8, 1))
    indivisible.data.batch_size = 12  # refused before anything compiles
    try:
        Trainer(indivisible, tempfile.mkdtemp(), devices)
        refusal = ""
    except config_lib.ConfigError as error:
        refusal = str(error)
    print(json.dumps({"devices": len(devices), "indivisible_batch_refusal": refusal,
                      "data8_vs_single": max_relative(data8["params"], single["params"]),
                      "data4_fsdp2_vs_single": max_relative(fsdp["params"], single["params"]),
                      "fsdp_sharded_leaves": sharded,
                      "restored_8_to_4_max_difference": difference}))


if __name__ == "__main__":
    sys.exit(main())
