"""grain pipelines: worker processes give the same batches as the main process; the trainer's
prefetching keeps checkpoints exact and errors where they belong."""

from __future__ import annotations

import grain
import jax.numpy as jnp
import numpy as np
import pytest

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


class _Broken:
    """A source whose record `key` cannot be read."""

    def __init__(self, source, key):
        self.source, self.key = source, key

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        if index == self.key:
            raise ValueError(f"record {index}: corrupt image")
        return self.source[index]


def test_prefetch_checkpoints_the_batches_handed_out_not_those_read_ahead():
    config = experiments.load("seg_synthetic:smoke")
    task = make_task(config)
    source, _ = task.dataset.sources(config.data)

    def loader():
        return iter(pipeline.train_loader(source, task.prepare, 4, 3))

    expected = _take(loader(), 6)
    prefetch = pipeline.Prefetch(loader(), put=lambda batch: batch, depth=3)
    for batch in expected[:3]:
        np.testing.assert_array_equal(next(prefetch)["image"], batch["image"])
    state = prefetch.get_state()  # by now the thread has read up to 3 batches further
    prefetch.close()
    resumed = pipeline.Prefetch(loader(), put=lambda batch: batch)
    resumed.set_state(state)  # as orbax's grain handler restores it
    resumed.start_prefetch()
    for batch in expected[3:]:
        np.testing.assert_array_equal(next(resumed)["label"], batch["label"])
    resumed.close()


def test_prefetch_raises_a_record_error_in_the_training_thread():
    config = experiments.load("seg_synthetic:smoke")
    task = make_task(config)
    source, _ = task.dataset.sources(config.data)
    # The record of the 4th batch (batch size 1, seed 0) is broken: 3 batches come first.
    key = grain.samplers.IndexSampler(len(source), grain.sharding.NoSharding(), shuffle=True,
                                      num_epochs=None, seed=0)[3].record_key
    prefetch = pipeline.Prefetch(iter(pipeline.train_loader(_Broken(source, key), task.prepare,
                                                            1, 0)), put=lambda batch: batch)
    for _ in range(3):
        next(prefetch)
    with pytest.raises(ValueError, match=f"record {key}: corrupt image"):
        next(prefetch)


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_normalisation_by_table_is_the_arithmetic():
    """cv2.LUT's table of every uint8 value: the same float32 values as (x - mean) / std, for
    single images, batches, mirrored views and empty arrays."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, np.uint8)
              for shape in [(5, 7, 3), (2, 64, 48, 3), (1, 1, 3), (0, 4, 3)]]
    images.append(rng.integers(0, 256, (40, 30, 3), np.uint8)[:, ::-1])
    for image in images:
        normalised = pipeline.normalize(image)
        expected = (image.astype(np.float32) - pipeline.IMAGENET_MEAN) / pipeline.IMAGENET_STD
        assert normalised.dtype == np.float32 and normalised.shape == image.shape
        np.testing.assert_array_equal(normalised, expected)
        # The device's (uint8 sent, normalised there): the very same values.
        np.testing.assert_array_equal(pipeline.normalize_on_device(jnp.asarray(image)), expected)
