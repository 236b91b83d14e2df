"""grain pipelines over any random-access source (a tfds `data_source`, a synthetic dataset).

The order of records is one seeded shuffle of the whole dataset; each global batch is the next
`batch_size` records of it, and every host reads only its own slice of each global batch. So the
global batches do not depend on how many hosts there are: a 2-host run trains on exactly the
batches of a 1-host run. The iterator's state goes into each checkpoint, so a resumed run sees
exactly the batches it would have seen.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Iterator

import cv2
import grain
import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


# Every uint8 value's normalised float32 a channel, for cv2.LUT: the same values as the
# arithmetic below, 8-12x faster (a Cityscapes crop: 0.7 ms against 8), on the host that feeds
# an accelerator.
_NORMALISED = ((np.arange(256, dtype=np.float32)[:, None] - IMAGENET_MEAN)
               / IMAGENET_STD).reshape(256, 1, 3)


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., H, W, 3) -> float32 normalised with the ImageNet statistics, as every
    reference does."""
    if image.dtype == np.uint8 and image.ndim >= 3 and image.shape[-1] == 3 and image.size:
        rows = np.ascontiguousarray(image).reshape(-1, image.shape[-2], 3)
        return cv2.LUT(rows, _NORMALISED).reshape(image.shape)
    return (image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD


def normalize_on_device(images: jax.Array) -> jax.Array:
    """`normalize` of uint8 images already on the device: the same table, hence the same
    float32 values (the host sends a quarter of the bytes)."""
    table = jnp.asarray(_NORMALISED.reshape(256, 3))
    return jnp.stack([table[images[..., channel], channel] for channel in range(3)], -1)


def _one_opencv_thread() -> None:
    """A loading process (or grain worker) is one core's worth of work: OpenCV's own thread
    pool inside it (warpAffine, resize, its decoders) added CPU time without adding speed (a
    COCO person crop: 4.0 ms of CPU against 2.8 single-threaded, the same wall time) and
    oversubscribes a host whose cores the workers already share."""
    global _OPENCV_SINGLE_THREADED_IN
    if _OPENCV_SINGLE_THREADED_IN != os.getpid():  # asking OpenCV costs ~40 us a sample
        cv2.setNumThreads(1)
        _OPENCV_SINGLE_THREADED_IN = os.getpid()


_OPENCV_SINGLE_THREADED_IN: int | None = None  # the process (a forked worker: set again)


class _Prepare(grain.transforms.Map):
    """The task's host-side preparation. Images stay uint8: the step normalises them on the
    device (hrnet_jax.training.step.network_input), so a batch is a quarter of the bytes to
    build, copy between grain's processes and send (a 512x1024 crop: 1.5 MB, not 6)."""

    def __init__(self, prepare: Callable[[dict], dict]):
        self._prepare = prepare

    def map(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _one_opencv_thread()
        example = self._prepare(dict(example))
        if np.asarray(example["image"]).dtype != np.uint8:
            raise TypeError(f"a task's prepare returned a {np.asarray(example['image']).dtype} "
                            "image: the loaders carry uint8 pictures (normalised on the device)")
        return example


class _Augment(grain.transforms.RandomMap):
    """The task's training augmentation with grain's per-record Generator (seeded from the
    sampler's seed and the record's position: the same run draws the same augmentations)."""

    def __init__(self, augment: Callable[[dict, np.random.Generator], dict]):
        self._augment = augment

    def random_map(self, example: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
        _one_opencv_thread()
        return self._augment(dict(example), rng)


def per_host_batch_size(global_batch_size: int) -> int:
    if global_batch_size % jax.process_count():
        raise ValueError(f"batch size {global_batch_size} does not split over "
                         f"{jax.process_count()} hosts")
    return global_batch_size // jax.process_count()


class HostSliceSampler:
    """This host's records of each global batch, taken from one global seeded order.

    Local position k of host h (of per-host batch L, global batch G) is global position
    (k // L) * G + h * L + k % L of the global sampler.
    """

    def __init__(self, global_sampler: Any, global_batch_size: int, host: int, host_count: int):
        self._global = global_sampler
        self._global_batch = global_batch_size
        self._host_batch = global_batch_size // host_count
        self._host = host

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        batch, offset = divmod(index, self._host_batch)
        position = batch * self._global_batch + self._host * self._host_batch + offset
        metadata = self._global[position]
        return grain.RecordMetadata(index=index, record_key=metadata.record_key, rng=metadata.rng)

    def __repr__(self) -> str:  # grain checks it when restoring an iterator
        return (f"HostSliceSampler({self._global!r}, global_batch={self._global_batch}, "
                f"host_batch={self._host_batch}, host={self._host})")


class GroupedSampler:
    """A seeded endless order in which every global batch holds records of one group (e.g. the
    image orientation: detection batches then pad to one shape).

    Each epoch shuffles every group's records, cuts them into global batches (a group's last
    partial batch waits for a later epoch's shuffle), and shuffles the batches. A position's
    record depends only on the seed and the position, as grain's IndexSampler.
    """

    def __init__(self, groups: np.ndarray, global_batch_size: int, seed: int):
        self._groups, self._batch, self._seed = np.asarray(groups), global_batch_size, seed
        members = [np.flatnonzero(self._groups == g) for g in np.unique(self._groups)]
        self._batches_per_epoch = sum(len(m) // global_batch_size for m in members)
        if not self._batches_per_epoch:
            raise ValueError(f"no group has {global_batch_size} records (sizes "
                             f"{[len(m) for m in members]}): lower the batch size")
        self._members = members
        self._orders: dict[int, np.ndarray] = {}  # recent epochs; grain reads from threads

    def epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self._seed, epoch])
        batches = []
        for members in self._members:
            shuffled = rng.permutation(members)
            count = len(shuffled) // self._batch
            batches += list(shuffled[:count * self._batch].reshape(count, self._batch))
        return np.concatenate([batches[i] for i in rng.permutation(len(batches))])

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        epoch, offset = divmod(index, self._batches_per_epoch * self._batch)
        order = self._orders.get(epoch)
        if order is None:  # each read or write of the dict is atomic: no thread sees half a cache
            order = self.epoch_order(epoch)
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = order
        rng = np.random.Generator(np.random.Philox(key=self._seed + index))
        return grain.RecordMetadata(index=index, record_key=int(order[offset]), rng=rng)

    def __repr__(self) -> str:
        return (f"GroupedSampler({len(self._groups)} records, global_batch={self._batch}, "
                f"seed={self._seed})")


def train_loader(source: Any, prepare: Callable[[dict], dict], global_batch_size: int, seed: int,
                 worker_count: int = 0, augment: Callable[[dict, np.random.Generator], dict] | None = None,
                 mix_batch: Callable[[dict, np.random.Generator], dict] | None = None
                 ) -> grain.DataLoader:
    """Endless shuffled batches of this host's slice; checkpointable iterator. `augment` draws
    per record, `mix_batch` (mixup / CutMix) per batch. A source with `groups` (an int a
    record) gets batches of one group each (`GroupedSampler`)."""
    if hasattr(source, "groups"):
        every_record = GroupedSampler(source.groups, global_batch_size, seed)
    else:
        every_record = grain.samplers.IndexSampler(len(source), grain.sharding.NoSharding(),
                                                   shuffle=True, num_epochs=None, seed=seed)
    sampler = HostSliceSampler(every_record, global_batch_size, jax.process_index(),
                               jax.process_count())
    operations = ([_Augment(augment)] if augment else []) + [
                  _Prepare(prepare), grain.transforms.Batch(per_host_batch_size(global_batch_size), drop_remainder=True)]
    if mix_batch:
        operations.append(_Augment(mix_batch))  # after Batch: one draw per batch
    if worker_count:
        # grain's worker processes read absl flags; a program not started by absl.app has not
        # parsed them (grain then fails with UnparsedFlagAccessError): take the defaults.
        from absl import flags
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
    # The sampler already picks this host's records: the loader itself must not shard again.
    return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                            worker_count=worker_count, shard_options=grain.sharding.NoSharding(),
                            read_options=READ_OPTIONS)


# grain's default (16 reader threads, 500 records read ahead per process) costs more than it
# gives: on 2 cores it fed 2.8 Cityscapes crops/s against 32 with these options, 74 synthetic
# batches/s against 250 (it polls every buffered record per record, and holds hundreds of
# full-size images). More throughput comes from worker processes (data.worker_count).
READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)


class Prefetch:
    """The next `depth` batches made ready in a background thread (read, transformed and put on
    the devices by `put`) while the devices run the step.

    Checkpointable as the iterator it wraps (orbax's grain handler calls get_state/set_state):
    its state is the wrapped iterator's state after the last batch *handed out*, not after the
    ones read ahead, so a resumed run trains on exactly the batches this one had not. An error
    in the thread (a corrupt image) is raised by the `next` that would have returned its batch.
    """

    def __init__(self, iterator: Any, put: Callable[[Any], Any], depth: int = 2):
        self._iterator, self._put, self._depth = iterator, put, depth
        self._state: bytes = iterator.get_state()
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> "Prefetch":
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            self._stop.clear()
            self._queue = queue.Queue(self._depth)
            self._thread = threading.Thread(target=self._produce, name="hrnet-prefetch", daemon=True)
            self._thread.start()
        batch, state, error = self._queue.get()
        if error is not None:
            self.close()
            raise error
        self._state = state
        return batch

    def _produce(self) -> None:
        while not self._stop.is_set():
            try:
                item = (self._put(next(self._iterator)), self._iterator.get_state(), None)
            except BaseException as error:  # StopIteration, a bad record: raised in the consumer
                item = (None, None, error)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def get_state(self) -> bytes:
        return self._state

    def set_state(self, state: bytes) -> None:
        self._state = state
        self.close()

    def start_prefetch(self) -> None:
        """(orbax's handler calls it after a restore; the thread starts at the next `next`.)"""

    def close(self) -> None:
        """Stop the thread, drop what it read ahead and rewind the wrapped iterator to the
        batches not yet handed out."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = None
        self._iterator.set_state(self._state)


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
