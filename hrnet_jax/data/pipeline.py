"""grain pipelines over any random-access source (a tfds `data_source`, a synthetic dataset).

Every host reads its own shard of the records (`ShardOptions(process_index, process_count)`),
in an order fixed by the seed; the iterator's state goes into each checkpoint, so a resumed run
sees exactly the batches it would have seen.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import grain
import jax
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 normalised with the ImageNet statistics, as every reference does."""
    return (image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD


class _Prepare(grain.transforms.Map):
    """The task's host-side preparation, then the image normalisation."""

    def __init__(self, prepare: Callable[[dict], dict]):
        self._prepare = prepare

    def map(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        example = self._prepare(dict(example))
        example["image"] = normalize(example["image"])
        return example


def per_host_batch_size(global_batch_size: int) -> int:
    if global_batch_size % jax.process_count():
        raise ValueError(f"batch size {global_batch_size} does not split over "
                         f"{jax.process_count()} hosts")
    return global_batch_size // jax.process_count()


def train_loader(source: Any, prepare: Callable[[dict], dict], global_batch_size: int, seed: int,
                 worker_count: int = 0) -> grain.DataLoader:
    """Endless shuffled batches of this host's shard; checkpointable iterator."""
    shard = grain.sharding.ShardOptions(jax.process_index(), jax.process_count(), drop_remainder=True)
    sampler = grain.samplers.IndexSampler(len(source), shard, shuffle=True, num_epochs=None, seed=seed)
    operations = [_Prepare(prepare),
                  grain.transforms.Batch(per_host_batch_size(global_batch_size), drop_remainder=True)]
    return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                            worker_count=worker_count)


def eval_batches(source: Any, prepare: Callable[[dict], dict], global_batch_size: int,
                 limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One pass over this host's shard in order; the last batch is padded to full size with
    `mask` 0, so that every batch has one static shape."""
    batch_size = per_host_batch_size(global_batch_size)
    count = len(source) if limit is None else min(limit, len(source))
    indices = np.arange(count)[jax.process_index()::jax.process_count()]
    # Every host must run the same number of steps: pad to the longest shard.
    steps = -(-(-(-count // jax.process_count())) // batch_size)
    prepare_op = _Prepare(prepare)
    for step in range(steps):
        chunk = indices[step * batch_size:(step + 1) * batch_size]
        examples = [prepare_op.map(source[int(i)]) for i in chunk]
        mask = np.array([1.0] * len(examples) + [0.0] * (batch_size - len(examples)), np.float32)
        filler = examples[0] if examples else prepare_op.map(source[0])
        examples += [filler] * (batch_size - len(examples))
        batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
        batch["mask"] = mask
        yield batch
