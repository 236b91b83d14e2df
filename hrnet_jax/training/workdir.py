"""What a run keeps in its workdir besides checkpoints, and how nothing there is lost: the config
it was started with (`config.json`, never replaced; later harmless changes recorded beside it)
and its figures (`metrics.jsonl` and `tensorboard/`, one curve even after a resume).

The workdir may be a bucket (`gs://...`, hrnet_jax.storage), where nothing can be appended to:
every file here is written whole (`metrics.jsonl` rewritten with its rows held in memory, a few
hundred kB at most), and TensorBoard's event files are written on local disk and uploaded whole.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import Any

import jax

from hrnet_jax import config as config_lib, storage
from hrnet_jax.experiments import current_name

# A run resumed with any of these changed would not describe (or not fit) its checkpoints.
IDENTITY_FIELDS = ("experiment", "task", "model.arch", "model.width", "model.head",
                   "model.num_classes", "model.detector.strides", "model.detector.channels",
                   "model.scan_modules", "data.name")


class ResumeConflict(ValueError):
    """The workdir holds another run than the one asked for."""


def _figures(config: config_lib.ExperimentConfig) -> dict[str, Any]:
    figures = config_lib.flat(config)
    # NAME of NAME:VARIANTS, a run recorded under an old one-file name taken as its family's.
    figures["experiment"] = current_name(figures["name"]).partition(":")[0]
    return figures


def latest_config_path(workdir: str) -> str | None:
    """The workdir's most recent recorded settings: the last `config.stepNNNNNN.json` a resume
    wrote, else `config.json`; None for a new workdir."""
    folder = storage.path(workdir)
    with storage.errors_named(folder, "read"):
        if not (folder / "config.json").exists():
            return None
        later = sorted(child.name for child in folder.iterdir()
                       if child.name.startswith("config.step") and child.name.endswith(".json"))
    return storage.join(workdir, later[-1] if later else "config.json")


def recorded_config(workdir: str) -> config_lib.ExperimentConfig | None:
    """The settings the workdir's run last recorded (None for a new workdir)."""
    path = latest_config_path(workdir)
    if path is None:
        return None
    with storage.errors_named(path, "read"):
        return config_lib.from_dict(json.loads(storage.path(path).read_text()))


def config_changes(workdir: str, config: config_lib.ExperimentConfig) -> dict[str, tuple]:
    """{field: (recorded, now)} of what differs from the workdir's recorded settings (empty for
    a new run). Raises `ResumeConflict` naming the fields when one of IDENTITY_FIELDS differs;
    checked before anything is built, so that nothing in the workdir is touched."""
    recorded = recorded_config(workdir)
    if recorded is None:
        return {}
    saved = _figures(recorded)
    now = _figures(config)
    changes = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v
               and k not in ("name", "description")}
    conflicts = [f"{k}: {changes[k][0]!r} there, {changes[k][1]!r} now"
                 for k in IDENTITY_FIELDS if k in changes]
    if conflicts:
        raise ResumeConflict(f"{workdir} holds another run ({saved['name']}) than the one asked "
                             f"for; differing: {'; '.join(conflicts)}. Its checkpoints and "
                             "config.json are left as they are: use another --workdir")
    return changes


def record_config(workdir: str, config: config_lib.ExperimentConfig, step: int) -> str | None:
    """Write `config.json` for a new run; a resumed run whose harmless settings changed (learning
    rate, steps, logging) gets `config.stepNNNNNN.json` from `step` on, the original kept.
    Returns the file written, if any (process 0 only)."""
    if jax.process_index() != 0:
        return None
    changes = config_changes(workdir, config)
    path = storage.join(workdir, "config.json")
    if storage.path(path).exists():
        if not changes:
            return None
        path = storage.join(workdir, f"config.step{step:06d}.json")
        print(f"resuming at step {step} with " + ", ".join(
            f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()) + f": recorded in {path}")
    config_lib.save_json(config, path)
    return path


class MetricsWriter:
    """JSON lines in DIR/metrics.jsonl (first process only). The file is rewritten whole at each
    write from the rows held here (an object store cannot append; a reader sees the old file or
    the new one). A file that cannot be written is said once on stderr; the run and its figures
    on the terminal go on."""

    def __init__(self, workdir: str):
        self.path = storage.join(workdir, "metrics.jsonl")
        self.replayed_path = storage.join(workdir, "metrics.replayed.jsonl")
        self.enabled = jax.process_index() == 0
        self.failed = False
        self._rows: list[str] | None = None  # read when first needed

    def rows(self) -> list[str]:
        if self._rows is None:
            file = storage.path(self.path)
            self._rows = [line + "\n" for line in file.read_text().splitlines()
                          if line.strip()] if file.exists() else []
        return self._rows

    def write(self, step: int, split: str, figures: dict[str, float]) -> bool:
        if not self.enabled:
            return False
        try:
            rows = self.rows()
            rows.append(json.dumps({"step": step, "split": split, **figures}) + "\n")
            storage.write_atomic(self.path, "".join(rows))
        except OSError as error:
            if not self.failed:
                print(f"warning: could not write {self.path} ({storage.describe(error)}); the "
                      f"step {step} {split} figures are only on the terminal", file=sys.stderr)
            self.failed = True
            return False
        return True

    def drop_replayed(self, step: int) -> int:
        """A run resumed at `step` trains the steps after it again: their earlier rows move to
        metrics.replayed.jsonl, so that metrics.jsonl stays one curve. Returns how many."""
        if not self.enabled:
            return 0
        rows = self.rows()
        later = [line for line in rows if json.loads(line)["step"] > step]
        if later:
            replayed = storage.path(self.replayed_path)
            earlier = replayed.read_text() if replayed.exists() else ""
            storage.write_atomic(self.replayed_path, earlier + "".join(later))
            self._rows = [line for line in rows if json.loads(line)["step"] <= step]
            storage.write_atomic(self.path, "".join(self._rows))
        return len(later)


class TensorBoard:
    """The run's scalars and pictures as TensorBoard event files in DIR/tensorboard (first
    process only), written with tensorboardX (no TensorFlow). Train figures go under `train/`,
    evaluation figures under `eval/`, per-class ones under their own group (`iou/road`, ...),
    pictures under `pictures/`. A run resumed at step S purges the later steps of the earlier
    files (TensorBoard's purge_step), so its curves carry on without duplicate steps.

    With the workdir in a bucket the writer writes on local disk and the event files are
    uploaded whole (at most every `UPLOAD_EVERY_S` seconds, and when closed): an object cannot
    be appended to, and tensorboardX's own bucket writer needs the cloud client libraries."""

    UPLOAD_EVERY_S = 60.0

    def __init__(self, workdir: str):
        self.folder = storage.join(workdir, "tensorboard")
        self.local_folder: str | None = None  # where the writer writes, when not self.folder
        self.uploaded_at = 0.0
        self.writer = None
        if jax.process_index() != 0:
            return
        try:
            import tensorboardX  # noqa: F401
        except ImportError as error:
            print(f"TensorBoard logging is off: {error} (pip install tensorboardX)",
                  file=sys.stderr)
            self.folder = None

    def start(self, step: int) -> None:
        """Open the writer for a run going on from `step` (0 for a new one)."""
        if self.folder is None or jax.process_index() != 0:
            return
        from tensorboardX import SummaryWriter

        folder = self.folder
        if storage.is_remote(folder):
            self.local_folder = folder = tempfile.mkdtemp(prefix="hrnet_jax_tensorboard_")
        self.writer = SummaryWriter(folder, purge_step=step + 1 if step else None,
                                    flush_secs=30)

    def _upload(self, force: bool = False) -> None:
        """The local event files to the bucket's folder, each object whole."""
        if self.local_folder is None or (
                not force and time.monotonic() - self.uploaded_at < self.UPLOAD_EVERY_S):
            return
        self.uploaded_at = time.monotonic()
        try:
            storage.copy_tree(self.local_folder, self.folder)
        except OSError as error:
            print(f"warning: could not upload the TensorBoard files to {self.folder} "
                  f"({storage.describe(error)}); trying again at the next figures",
                  file=sys.stderr)

    def scalars(self, step: int, split: str, figures: dict[str, float]) -> None:
        if self.writer is None:
            self.start(0)  # eval / predict runs: appended, nothing purged
        if self.writer is None:
            return
        for key, value in figures.items():
            self.writer.add_scalar(key if "/" in key else f"{split}/{key}", value, step)
        self.writer.flush()
        self._upload()

    def picture(self, step: int, name: str, picture: Any) -> None:
        if self.writer is None:
            self.start(0)
        if self.writer is not None:
            self.writer.add_image(f"pictures/{name}", picture, step, dataformats="HWC")
            self.writer.flush()
            self._upload()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self._upload(force=True)
