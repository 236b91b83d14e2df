"""grain pipelines: worker processes give the same batches as the main process."""

from __future__ import annotations

import numpy as np

from hrnet_jax import experiments
from hrnet_jax.data import pipeline
from hrnet_jax.tasks import make_task


def test_worker_processes_give_the_same_augmented_batches():
    config = experiments.load("seg_synthetic:smoke")
    config.data.base_size, config.data.crop_size = 64, (32, 48)
    config.data.train_scales, config.data.flip = (0.5, 1.0, 1.5), True
    task = make_task(config)
    source, _ = task.dataset.sources(config.data)
    batches = []
    for workers in (0, 1):
        iterator = iter(pipeline.train_loader(source, task.prepare, 4, 3, workers, task.augment))
        batches.append([next(iterator) for _ in range(2)])
    for a, b in zip(*batches):
        assert a["image"].shape == (4, 32, 48, 3) and a["label"].shape == (4, 32, 48)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
