"""What a run keeps in its workdir besides checkpoints, and how nothing there is lost: the config
it was started with (`config.json`, never replaced; later harmless changes recorded beside it)
and its figures (`metrics.jsonl` and `tensorboard/`, one curve even after a resume).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax

from hrnet_jax import config as config_lib

# A run resumed with any of these changed would not describe (or not fit) its checkpoints.
IDENTITY_FIELDS = ("experiment", "task", "model.arch", "model.width", "model.head",
                   "model.num_classes", "model.strides", "model.head_channels",
                   "model.scan_modules", "data.name")


class ResumeConflict(ValueError):
    """The workdir holds another run than the one asked for."""


def _figures(config: config_lib.ExperimentConfig) -> dict[str, Any]:
    figures = config_lib.flat(config)
    figures["experiment"] = figures["name"].partition(":")[0]  # NAME of NAME:VARIANT
    return figures


def config_changes(workdir: str, config: config_lib.ExperimentConfig) -> dict[str, tuple]:
    """{field: (saved, now)} of what differs from the workdir's `config.json` (empty for a new
    run). Raises `ResumeConflict` naming the fields when one of IDENTITY_FIELDS differs; checked
    before anything is built, so that nothing in the workdir is touched."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        saved = _figures(config_lib.from_dict(json.load(f)))
    now = _figures(config)
    changes = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v and k != "name"}
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
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        if not changes:
            return None
        path = os.path.join(workdir, f"config.step{step:06d}.json")
        print(f"resuming at step {step} with " + ", ".join(
            f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()) + f": recorded in {path}")
    config_lib.save_json(config, path)
    return path


class MetricsWriter:
    """Appends JSON lines to DIR/metrics.jsonl (first process only). A file that cannot be
    written is said once on stderr; the run and its figures on the terminal go on."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = jax.process_index() == 0
        self.failed = False

    def write(self, step: int, split: str, figures: dict[str, float]) -> bool:
        if not self.enabled:
            return False
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "split": split, **figures}) + "\n")
        except OSError as error:
            if not self.failed:
                print(f"warning: could not write {self.path} ({error}); the step {step} "
                      f"{split} figures are only on the terminal", file=sys.stderr)
            self.failed = True
            return False
        return True

    def drop_replayed(self, step: int) -> int:
        """A run resumed at `step` trains the steps after it again: their earlier rows move to
        metrics.replayed.jsonl, so that metrics.jsonl stays one curve. Returns how many."""
        if not self.enabled or not os.path.exists(self.path):
            return 0
        with open(self.path) as f:
            rows = [line for line in f if line.strip()]
        later = [line for line in rows if json.loads(line)["step"] > step]
        if later:
            with open(os.path.join(os.path.dirname(self.path), "metrics.replayed.jsonl"), "a") as f:
                f.writelines(later)
            with open(self.path + ".tmp", "w") as f:
                f.writelines(line for line in rows if json.loads(line)["step"] <= step)
            os.replace(self.path + ".tmp", self.path)
        return len(later)


class TensorBoard:
    """The run's scalars and pictures as TensorBoard event files in DIR/tensorboard (first
    process only), written with tensorboardX (no TensorFlow). Train figures go under `train/`,
    evaluation figures under `eval/`, per-class ones under their own group (`iou/road`, ...),
    pictures under `pictures/`. A run resumed at step S purges the later steps of the earlier
    files (TensorBoard's purge_step), so its curves carry on without duplicate steps."""

    def __init__(self, workdir: str):
        self.folder = os.path.join(workdir, "tensorboard")
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

        self.writer = SummaryWriter(self.folder, purge_step=step + 1 if step else None,
                                    flush_secs=30)

    def scalars(self, step: int, split: str, figures: dict[str, float]) -> None:
        if self.writer is None:
            self.start(0)  # eval / predict runs: appended, nothing purged
        if self.writer is None:
            return
        for key, value in figures.items():
            self.writer.add_scalar(key if "/" in key else f"{split}/{key}", value, step)
        self.writer.flush()

    def picture(self, step: int, name: str, picture: Any) -> None:
        if self.writer is None:
            self.start(0)
        if self.writer is not None:
            self.writer.add_image(f"pictures/{name}", picture, step, dataformats="HWC")
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
