"""What a bucket costs a run: checkpoint save and restore of a train state, and grain's read
throughput of a prepared dataset, each to / from local disk and a bucket, in one run.

    python scripts/storage_speed.py [--arch hrnet_w48] [--bucket gs://BUCKET/PREFIX] \
        [--cityscapes ../shared/data/cityscapes_mini]

Without `--bucket` the bucket is a fake-gcs-server on 127.0.0.1 (tests/gcs_emulator.py, the test
extra): its figures are this machine's loopback, not a cloud's network, but they show what the
project's own path costs (orbax's TensorStore writes, the rewrite-whole files, the staging).
The state is the arch's segmentation model (19 classes) with SGD momentum, as the Cityscapes
recipe trains it. The dataset is read through the trainer's own path: from local disk, and from
the bucket (staged to local disk once, then read there: the staging time is reported apart).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def checkpoint_times(state, folder: str) -> dict[str, float]:
    import jax

    from hrnet_jax.training.checkpoint import Checkpointer

    checkpoints = Checkpointer(folder, every_steps=1, keep=1)
    start = time.perf_counter()
    checkpoints.save(1, state, None, {"note": "storage_speed"}, force=True)
    checkpoints.wait()
    saved = time.perf_counter() - start
    shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
    start = time.perf_counter()
    restored = checkpoints.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                                state), shardings)
    jax.block_until_ready(restored)
    restored_s = time.perf_counter() - start
    checkpoints.close()
    return {"save_s": round(saved, 2), "restore_s": round(restored_s, 2)}


def read_rate(data_dir: str, passes: int) -> dict[str, float]:
    """Records/s of the Cityscapes evaluation split through the trainer's own source (and, for
    a bucket, the staging before it)."""
    from hrnet_jax.data import datasets

    dataset = datasets.get("cityscapes")
    start = time.perf_counter()
    builder = dataset.prepared_builder(data_dir)
    opened = time.perf_counter() - start
    source = dataset.split(builder, "val")
    start = time.perf_counter()
    for _ in range(passes):
        for index in range(len(source)):
            source[index]
    elapsed = time.perf_counter() - start
    return {"open_s": round(opened, 3),
            "records_per_s": round(passes * len(source) / elapsed, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="hrnet_w48", help="an arch, or tiny (for tests)")
    parser.add_argument("--bucket", help="gs://BUCKET/PREFIX (default: a local emulator)")
    parser.add_argument("--cityscapes", default=str(ROOT.parent / "shared" / "data" /
                                                   "cityscapes_mini"))
    parser.add_argument("--passes", type=int, default=200)
    args = parser.parse_args(argv)
    emulator = None
    if args.bucket is None:
        sys.path.insert(0, str(ROOT / "tests"))
        import gcs_emulator

        emulator = gcs_emulator.start("storage-speed")
        os.environ.update(gcs_emulator.environment(emulator.url))
        args.bucket = "gs://storage-speed/run"
    local = tempfile.mkdtemp(prefix="storage_speed_")
    saved_cache = os.environ.get("HRNET_JAX_CACHE")
    os.environ["HRNET_JAX_CACHE"] = os.path.join(local, "cache")  # staging measured afresh
    try:
        import jax
        import optax

        from hrnet_jax import storage
        from hrnet_jax.data import prepare
        from hrnet_jax.models import create_model, tiny_arch
        from hrnet_jax.training import step

        # "tiny": the tests' width-4 model, to check the script itself in seconds.
        model = create_model(tiny_arch(4) if args.arch == "tiny" else args.arch,
                             "segmentation", 19)
        state = jax.jit(lambda: step.init_state(model, optax.sgd(0.01, momentum=0.9),
                                                (64, 64, 3), 0))()
        size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
        report = {"arch": args.arch, "state_mb": round(size / 2**20, 1),
                  "bucket": "local fake-gcs-server" if emulator else args.bucket,
                  "checkpoint_local": checkpoint_times(state, os.path.join(local, "ckpt")),
                  "checkpoint_bucket": checkpoint_times(state, f"{args.bucket}/ckpt")}
        if os.path.isdir(args.cityscapes):
            prepare.prepare("cityscapes", args.cityscapes, os.path.join(local, "tfds"))
            prepare.prepare("cityscapes", args.cityscapes, f"{args.bucket}/tfds")
            shutil.rmtree(storage.cache_folder(f"{args.bucket}/tfds"))  # a host seeing it new
            report["read_local"] = read_rate(os.path.join(local, "tfds"), args.passes)
            report["read_bucket_first"] = read_rate(f"{args.bucket}/tfds", args.passes)
            report["read_bucket_staged"] = read_rate(f"{args.bucket}/tfds", args.passes)
        print(json.dumps(report))
        return report
    finally:
        shutil.rmtree(local, ignore_errors=True)
        if saved_cache is None:
            os.environ.pop("HRNET_JAX_CACHE", None)
        else:
            os.environ["HRNET_JAX_CACHE"] = saved_cache
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    main()
