"""Shared test helpers. Compiled functions are shared through module-scoped fixtures."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

# Tests compile many small programs and run each a few times: XLA's optimisation passes cost
# more than they save (a smoke run's CPU time halves without them). Numerics stay within the
# tests' tolerances; benchmarks and real runs keep every optimisation. Child processes (the
# multi-host tests) inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Without optimisations most programs compile in under a second, below what the persistent
# cache (JAX_COMPILATION_CACHE_DIR, set by .ci/run) keeps by default: keep them all, so that the
# many processes of the CLI and multi-host tests load what another test compiled.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# gs:// paths go through fsspec (gcsfs), which the GCS emulator of the bucket tests speaks to,
# rather than tf.io.gfile, which etils.epath would pick with TensorFlow installed. Set before
# any path is touched: etils reads it once.
os.environ.setdefault("EPATH_USE_TF", "false")
# gcsfs reads this when imported: the plain JSON API, which the emulator serves (see
# tests/gcs_emulator.py).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def shared_data_dir() -> pathlib.Path:
    """The real fixture data: `$HRNET_FIXTURES` or `../shared/data` beside the checkout."""
    root = pathlib.Path(__file__).resolve().parents[1]
    return pathlib.Path(os.environ.get("HRNET_FIXTURES", root.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    path = shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the real fixture data at {path}")
        pytest.skip(f"real fixture data not found at {path} (set HRNET_FIXTURES)")
    return path


@pytest.fixture(scope="session")
def bucket():
    """`gs://hrnet-test` on a GCS emulator of this machine (tests/gcs_emulator.py), its client
    settings in the environment of this process and of the processes it starts."""
    import gcs_emulator

    saved = {k: os.environ.get(k) for k in gcs_emulator.environment("")}
    server = gcs_emulator.start("hrnet-test")
    os.environ.update(gcs_emulator.environment(server.url))
    yield "gs://hrnet-test"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: the parity measure of the issues."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def rows_from_targets(task, records, aspect_ratio: float, evaluated, clip_boxes: bool = False
                      ) -> dict[str, np.ndarray]:
    """A top-down task's evaluation rows when the network is replaced by the training targets
    of the boxes it is given: `evaluated(index, record)` lists the person slots the task
    evaluates in that image, in its order, whose targets the stand-in network returns;
    `clip_boxes` as the dataset's training persons are cropped (COCO's boxes are clipped)."""
    from hrnet_jax.data import topdown

    rows = []
    for index in range(len(records)):
        record = dict(records[index])
        slots = evaluated(index, record)
        person = lambda slot: topdown.PersonInstances(records, [[index, slot]], aspect_ratio,
                                                      clip_boxes)[0]
        crops = [task.prepare(person(slot)) for slot in slots]
        queue = [np.asarray(task.targets({"joints": crop["joints"][None],
                                          "visible": crop["visible"][None]})[0][0])
                 for crop in crops]
        blank = np.zeros_like(queue[0]) if queue else None

        def predict(batch):  # the network, replaced by the targets
            maps = [queue.pop(0) for _ in range(min(len(batch), len(queue)))]
            return np.stack(maps + [blank] * (len(batch) - len(maps)))

        rows.append(task.evaluate_image(predict, record))
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def perfect_head_outputs(shapes, strides, boxes, labels, box_mask, num_classes
                         ) -> dict[str, list[np.ndarray]]:
    """FCOS head outputs (batch of one) that a perfect network would give for these boxes:
    probability ~1 for the assigned class at every positive location and ~0 elsewhere, the
    target distances, centerness ~1. `shapes`: each level's (h, w)."""
    from hrnet_jax.detection import points as fcos

    locations, location_strides, levels = fcos.level_locations(shapes, strides)
    targets = fcos.assign_targets(locations, location_strides, levels, boxes, labels, box_mask)
    classes = np.asarray(targets["class"])
    logits = np.where(np.arange(num_classes)[None] == classes[:, None], 12.0, -12.0)
    regression = np.where(classes[:, None] >= 0, np.asarray(targets["regression"]), 1.0)
    ends = np.cumsum([h * w for h, w in shapes])[:-1]
    per_level = lambda x: [part.reshape(1, h, w, *x.shape[1:]).astype(np.float32)
                           for part, (h, w) in zip(np.split(x, ends), shapes)]
    return {"class_logits": per_level(logits), "boxes": per_level(regression),
            "centerness": per_level(np.full(len(classes), 12.0))}


@pytest.fixture(scope="session")
def coco_detection_data(shared_data, tmp_path_factory) -> pathlib.Path:
    """The real COCO sample (shared/data/coco_mini) prepared for detection, once a process."""
    from hrnet_jax.data import prepare

    data_dir = tmp_path_factory.mktemp("tfds_coco_detection")
    prepare.prepare("coco_detection", str(shared_data / "coco_mini"), str(data_dir))
    return data_dir


def coco_detection_records(data_dir: pathlib.Path):
    import tensorflow_datasets as tfds

    return tfds.builder("hrnet_coco_detection", data_dir=str(data_dir)).as_data_source("val")


def detection_smoke_config(data_dir: pathlib.Path):
    """FCOS's smoke experiment reading the prepared sample."""
    from hrnet_jax.experiments import load

    config = load("det_coco_fcos:w18,smoke")
    config.data.data_dir = str(data_dir)
    return config


def run_readme_block(marker: str, replacements: dict[str, str], forbidden: set[str],
                     cwd: pathlib.Path) -> tuple[str, np.ndarray]:
    """The README's python block after `<!-- marker`, with `replacements` made, run in a
    fresh process (no PYTHONPATH) that must not import any of the `forbidden` packages;
    returns its output and its `logits`."""
    import re
    import subprocess
    import sys

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    script = re.search(rf"<!-- {marker}.*?-->\n```python\n(.*?)```", readme, re.S).group(1)
    for old, new in replacements.items():
        script = script.replace(old, new)
    script += ("\nimport sys\n"
               "loaded = {name.split('.')[0] for name in sys.modules}\n"
               f"assert not loaded & set({sorted(forbidden)!r}), loaded\n"
               f"np.save({str(cwd / 'logits.npy')!r}, logits)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=cwd, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, np.load(cwd / "logits.npy")


def record_compression(folder: str) -> set[str]:
    """The compression options of the ArrayRecord shards in `folder`, as their headers say."""
    from array_record.python import array_record_module as records

    options = set()
    for shard in pathlib.Path(folder).glob("*.array_record-*"):
        reader = records.ArrayRecordReader(str(shard))
        options |= {option for option in reader.writer_options_string().split(",")
                    if option.split(":")[0] in ("uncompressed", "zstd", "brotli", "snappy")}
        reader.close()
    return options
