"""The device mesh (axes `data` and `fsdp`) and the shardings of batches and parameters.

Under `jax.jit` with these shardings, BatchNorm's batch statistics are reduced over the whole
global batch: SyncBN, as the segmentation paper trained with, with no extra code.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hrnet_jax.config import MeshConfig


def make_mesh(config: MeshConfig, devices: list | None = None) -> Mesh:
    devices = devices or jax.devices()
    count = len(devices)
    data, fsdp = config.data, config.fsdp
    if data == -1 and fsdp == -1:
        raise ValueError("mesh: at most one of data and fsdp may be -1")
    data = count // fsdp if data == -1 else data
    fsdp = count // data if fsdp == -1 else fsdp
    if data * fsdp != count:
        raise ValueError(f"mesh.data={config.data} x mesh.fsdp={config.fsdp} makes a mesh of "
                         f"{data} x {fsdp} devices; this run has {count}: set mesh.data and "
                         f"mesh.fsdp to cover exactly {count}")
    return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The batch axis split over every device (data x fsdp)."""
    return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """Split a parameter's largest axis that divides by the fsdp size; replicate the rest."""
    size = mesh.shape["fsdp"]
    if size == 1:
        return replicated(mesh)
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % size == 0 and shape[axis] >= size:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return NamedSharding(mesh, P(*spec))
    return replicated(mesh)


def state_shardings(mesh: Mesh, abstract_state: Any) -> Any:
    return jax.tree.map(lambda leaf: fsdp_sharding(mesh, leaf.shape), abstract_state)


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assemble every host's part of the batch into global arrays sharded over the mesh."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


def barrier(name: str, timeout_s: int = 3600) -> None:
    """Wait until every process arrives, through the coordination service (no device
    collective, so no collective-library timeout). A no-op on one process."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the client jax.distributed.initialize started

    distributed.global_state.client.wait_at_barrier(name, timeout_s * 1000)


def process_allgather(tree: Any) -> Any:
    """Every host's copy of a pytree of same-shaped arrays, stacked on a new leading axis."""
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree)


def gather_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every host's rows, concatenated in host order; hosts may hold different numbers of rows
    (each is padded to the longest for the collective). Integers travel as int32, floats as
    float32 (JAX without x64); a column of strings (object or str dtype, e.g. RLE masks) as
    zero-padded UTF-8 bytes, returned as an object array of str."""
    counts = np.asarray(process_allgather(np.array([len(v) for v in rows.values()], np.int32)))
    out = {}
    for column, (key, value) in enumerate(rows.items()):
        text = value.dtype.kind in "OUS"
        if text:
            value = _text_bytes(value)
        longest = int(counts[:, column].max())
        padded = np.zeros((longest, *value.shape[1:]), value.dtype)
        padded[:len(value)] = value
        gathered = np.asarray(process_allgather(padded))
        out[key] = np.concatenate([gathered[host, :counts[host, column]]
                                   for host in range(len(counts))])
        if text:
            out[key] = np.array([bytes(row).rstrip(b"\0").decode() for row in
                                 out[key].astype(np.uint8)], object).reshape(-1)
    return out


def _text_bytes(strings: np.ndarray) -> np.ndarray:
    """A column of strings -> (rows, length) uint8, zero-padded to the longest on any host."""
    encoded = [(s.decode() if isinstance(s, bytes) else str(s)).encode() for s in strings]
    longest = int(np.asarray(process_allgather(
        np.array(max(map(len, encoded), default=0), np.int32))).max())
    out = np.zeros((len(encoded), max(longest, 1)), np.uint8)
    for row, data in enumerate(encoded):
        out[row, :len(data)] = np.frombuffer(data, np.uint8)
    return out


class CompiledOnFirstCall:
    """A jitted function compiled on its first call, then a barrier, then run.

    Hosts finish compiling at different times (seconds apart on a pod, a minute apart on a
    loaded CPU), and gloo, the CPU collective library, gives up connecting after 30 s: the
    first collective must not start until every process holds the executable. Shapes are
    static for a run (fixed batch, padded eval batches), so one compilation serves them all.

    A compilation takes from seconds to minutes, in silence: with a `key` (what identifies the
    program: experiment, model, shapes, devices) it is announced, with how long the same one
    took last time on this host (remembered in compile_times.json of the user's cache).
    """

    def __init__(self, jitted: Any, name: str, key: str = ""):
        self.jitted, self.name, self.key, self.compiled = jitted, name, key, None

    def __call__(self, *args):
        if self.compiled is None:
            started = time.perf_counter()
            if self.key and jax.process_index() == 0:
                last = _compile_times().get(f"{self.name}|{self.key}")
                tqdm.write(f"compiling the {self.name.replace('_', ' ')} "
                           + (f"(took {last:.0f} s last time)" if last is not None else
                              "(the first time for this model and shape: up to minutes)"),
                           file=sys.stderr)
            self.compiled = self.jitted.lower(*args).compile()
            if self.key and jax.process_index() == 0:
                _remember_compile_time(f"{self.name}|{self.key}", time.perf_counter() - started)
            barrier(f"hrnet_jax compiled {self.name}")
        return self.compiled(*args)


def _compile_times_path() -> str:
    from hrnet_jax.storage import cache_root

    return os.path.join(cache_root(), "compile_times.json")


def _compile_times() -> dict[str, float]:
    try:
        with open(_compile_times_path()) as file:
            return json.load(file)
    except (OSError, ValueError):
        return {}


def _remember_compile_time(key: str, seconds: float) -> None:
    times = {**_compile_times(), key: round(seconds, 1)}
    with contextlib.suppress(OSError):  # a read-only home: nothing remembered, nothing lost
        os.makedirs(os.path.dirname(_compile_times_path()), exist_ok=True)
        temporary = f"{_compile_times_path()}.{os.getpid()}"
        with open(temporary, "w") as file:
            json.dump(dict(sorted(times.items())[-500:]), file)
        os.replace(temporary, _compile_times_path())
