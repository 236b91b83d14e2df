"""The trainer, read top to bottom: build, restore, step, log, checkpoint, evaluate, draw.

Every task runs through here; a task only supplies its loss, metric and pictures
(hrnet_jax.tasks). Logs go to a progress bar and to DIR/metrics.jsonl, one JSON object a line.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from hrnet_jax import config as config_lib
from hrnet_jax.data import detection, pipeline, synthetic, topdown
from hrnet_jax.data.keypoint_sets import KEYPOINT_SETS, LANDMARK_SETS
from hrnet_jax.models import create_model, tiny_arch
from hrnet_jax.tasks import Task, make_task
from hrnet_jax.training import optim, pretrained, sharding, step as step_lib
from hrnet_jax.training.checkpoint import Checkpointer


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def build_model(config: config_lib.ExperimentConfig):
    m = config.model
    arch = tiny_arch(m.width) if m.arch == "tiny" else m.arch
    overrides = {"dtype": jnp.dtype(m.dtype), "scan_modules": m.scan_modules,
                 "norm_eval": m.norm_eval}
    if m.upsample is not None:
        overrides["upsample"] = m.upsample
    if m.bn_momentum is not None:
        overrides["bn_momentum"] = m.bn_momentum
    if m.head == "detection":
        overrides.update(strides=tuple(m.strides), head_channels=m.head_channels)
    return create_model(arch, m.head, m.num_classes, **overrides)


def make_sources(config: config_lib.ExperimentConfig) -> tuple[Any, Any]:
    """(train, eval) random-access sources of the experiment's dataset."""
    d = config.data
    if d.name in synthetic.SOURCES:
        cls = synthetic.SOURCES[d.name]
        # Evaluation pictures come from a different seed: never seen in training.
        return (cls(d.num_train, tuple(d.image_size), d.seed),
                cls(d.num_eval, tuple(d.image_size), d.seed + 1_000_003))
    from hrnet_jax.data import prepare
    if d.name in prepare.BUILDERS:
        builder = prepared_builder(d)
        train, evaluation = (prepared_split(builder, d, split) for split in (d.train_split, d.eval_split))
        if d.name in KEYPOINT_SETS or d.name in LANDMARK_SETS:
            # records are images; training takes one person (face) at a time
            height, width = d.image_size
            persons = builder.info.metadata[d.train_split]["training_persons"]
            train = topdown.PersonInstances(train, persons, width / height,
                                            clip_boxes=d.name == "coco_keypoints")
        if d.name == "coco_detection":  # images with boxes, in orientation-grouped batches
            metadata = builder.info.metadata[d.train_split]
            train = detection.DetectionRecords(train, metadata["training_records"],
                                               metadata["portrait_records"])
        return train, evaluation
    raise ValueError(f"unknown dataset {d.name!r}; available: "
                     f"{', '.join([*synthetic.SOURCES, *prepare.BUILDERS])}")


def prepared_builder(data: config_lib.DataConfig) -> Any:
    """The tfds builder of a dataset prepared by `python -m hrnet_jax.data.prepare`."""
    import tensorflow_datasets as tfds

    from hrnet_jax.data import prepare

    builder_class = prepare.builder_class(data.name)  # importing it registers it with tfds
    data_dir = os.path.expanduser(data.data_dir)
    builder = tfds.builder(prepare.BUILDERS[data.name][2], data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"{data.name} is not prepared in {data_dir}.\n"
            f"{builder_class.MANUAL_DOWNLOAD_INSTRUCTIONS}\n"
            f"(or pass --set data.data_dir=DIR where it was prepared)")
    return builder


def prepared_split(builder: Any, data: config_lib.DataConfig, split: str) -> Any:
    """A split read through `tfds.data_source` (ArrayRecord, random access, no TensorFlow)."""
    if split not in builder.info.splits:
        raise ValueError(f"{data.name} in {data.data_dir} has splits {list(builder.info.splits)}, "
                         f"not {split!r}")
    return builder.as_data_source(split)


class MetricsWriter:
    """Appends JSON lines to DIR/metrics.jsonl (first process only)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = jax.process_index() == 0

    def write(self, step: int, split: str, figures: dict[str, float]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "split": split, **figures}) + "\n")


class Trainer:
    """Holds what one run builds once: mesh, model, task, compiled steps, checkpoints."""

    def __init__(self, config: config_lib.ExperimentConfig, workdir: str,
                 devices: list | None = None):
        self.config, self.workdir = config, workdir
        os.makedirs(workdir, exist_ok=True)
        self.mesh = sharding.make_mesh(config.mesh, devices)
        self.task: Task = make_task(config)
        self.model = build_model(config)
        num_steps = config.loop.num_steps
        self.tx = optim.make_optimizer(config.optim, num_steps)
        image_shape = (*config.data.image_size, 3)
        init = lambda: step_lib.init_state(self.model, self.tx, image_shape, config.loop.seed)
        self.abstract_state = jax.eval_shape(init)
        self.state_shardings = sharding.state_shardings(self.mesh, self.abstract_state)
        self.init_fn = jax.jit(init, out_shardings=self.state_shardings)
        batch_sharding = sharding.batch_sharding(self.mesh)
        replicated = sharding.replicated(self.mesh)
        self.train_step = sharding.CompiledOnFirstCall(jax.jit(
            step_lib.make_train_step(self.model, self.tx, self.task, config.optim.grad_accum_steps),
            in_shardings=(self.state_shardings, batch_sharding),
            out_shardings=(self.state_shardings, replicated), donate_argnums=0), "train_step")
        self.eval_step = sharding.CompiledOnFirstCall(jax.jit(
            step_lib.make_eval_step(self.model, self.task),
            in_shardings=(self.state_shardings, batch_sharding), out_shardings=replicated),
            "eval_step")
        self.predict = jax.jit(step_lib.make_predict(self.model, self.task.postprocess))
        self.checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"),
                                        config.checkpoint.every_steps, config.checkpoint.keep)
        self.metrics = MetricsWriter(workdir)

    # -- data: opened when first needed (predicting on files needs no dataset) ---------------
    @functools.cached_property
    def sources(self) -> tuple[Any, Any]:
        return make_sources(self.config)

    @property
    def train_source(self) -> Any:
        return self.sources[0]

    @property
    def eval_source(self) -> Any:
        return self.sources[1]

    # -- state ------------------------------------------------------------------------------
    def restore_or_init(self, data_iterator: Any = None) -> dict:
        if self.checkpoints.latest_step() is not None:
            return self.checkpoints.restore(self.abstract_state, self.state_shardings, data_iterator)
        state = self.init_fn()
        if self.config.model.pretrained:
            state = self.with_pretrained(state)
        return state

    def with_pretrained(self, state: dict) -> dict:
        """The state with its backbone from `model.pretrained` (strictly accounted)."""
        fresh = {"params": state["params"], "batch_stats": state["batch_stats"]}
        variables, account = pretrained.initialise_from(
            os.path.expanduser(self.config.model.pretrained), self.model.arch, fresh)
        if jax.process_index() == 0:
            print(account)
        for collection in ("params", "batch_stats"):
            state[collection] = jax.device_put(variables[collection],
                                               self.state_shardings[collection])
        return state

    def save(self, state: dict, data_iterator: Any, force: bool = False) -> None:
        step = int(jax.device_get(state["step"]))
        self.checkpoints.save(step, state, data_iterator, config_lib.to_dict(self.config), force)

    # -- training ---------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        config = self.config
        if jax.process_index() == 0:
            config_lib.save_json(config, os.path.join(self.workdir, "config.json"))
        loader = pipeline.train_loader(self.train_source, self.task.prepare, config.data.batch_size,
                                       config.data.seed, config.data.worker_count, self.task.augment,
                                       self.task.mix_batch)
        data_iterator = iter(loader)
        state = self.restore_or_init(data_iterator)
        first_step = int(jax.device_get(state["step"]))
        num_steps = config.loop.num_steps
        stop = _SigtermFlag()
        progress = tqdm(total=num_steps, initial=first_step, desc=config.name, unit="step",
                        disable=jax.process_index() != 0, dynamic_ncols=True)
        last_log_time, last_log_step = time.perf_counter(), first_step
        pending: tuple[int, dict] | None = None  # checked one step late: the device never waits
        try:
            for step in range(first_step + 1, num_steps + 1):
                batch = sharding.global_batch(self.mesh, next(data_iterator))
                state, figures = self.train_step(state, batch)
                if pending is not None:
                    _check_finite(*pending)
                pending = (step, figures)
                progress.update(1)
                if step % config.loop.log_every == 0 or step == num_steps:
                    _check_finite(*pending)
                    now = time.perf_counter()
                    logged = {k: float(v) for k, v in jax.device_get(figures).items()}
                    logged["lr"] = optim.current_learning_rate(config.optim, num_steps, step - 1)
                    logged["images_per_s"] = (step - last_log_step) * config.data.batch_size / (
                        now - last_log_time)
                    last_log_time, last_log_step = now, step
                    self.metrics.write(step, "train", logged)
                    progress.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{logged['lr']:.2e}",
                                         img_s=f"{logged['images_per_s']:.1f}")
                if step % config.checkpoint.every_steps == 0 or step == num_steps or stop.raised:
                    _check_finite(*pending)  # never checkpoint a diverged state
                    self.save(state, data_iterator, force=True)
                if config.loop.eval_every and step % config.loop.eval_every == 0 and step != num_steps:
                    self.evaluate(state)
                if stop.raised:
                    progress.write(f"SIGTERM: saved step {step}, exiting")
                    break
        finally:
            # A save in flight completes even when a NaN stops the run: it is the last good one.
            self.checkpoints.wait()
        progress.close()
        result = self.evaluate(state) if not stop.raised else {}
        if not stop.raised:
            self.draw_pictures(state)
        return result

    # -- evaluation and pictures ------------------------------------------------------------
    def evaluate(self, state: dict | None = None) -> dict[str, float]:
        state = self.restore_or_init() if state is None else state
        step = int(jax.device_get(state["step"]))
        if self.task.evaluate_image is not None:
            result = self.task.summarize(self.evaluate_images(state))
            self.report(step, result)
            return result
        sums = None
        batches = pipeline.eval_batches(self.eval_source, self.task.prepare,
                                        self.config.data.eval_batch_size)
        for local in tqdm(batches, desc="eval", unit="batch", leave=False,
                          disable=jax.process_index() != 0,
                          total=math.ceil(len(self.eval_source) / self.config.data.eval_batch_size)):
            out = self.eval_step(state, sharding.global_batch(self.mesh, local))
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        result = self.task.summarize(jax.device_get(sums))
        self.report(step, result)
        return result

    def report(self, step: int, result: dict[str, float]) -> None:
        """Eval figures to metrics.jsonl and the terminal: the headline metric, the other
        figures, and per-class figures (`iou/road`, ...) as a table."""
        self.metrics.write(step, "eval", result)
        if jax.process_index() != 0:
            return
        overall = {k: v for k, v in result.items() if "/" not in k}
        print(f"step {step} eval: " + ", ".join(f"{k} {v:.4f}" for k, v in overall.items()))
        per_class = {k: v for k, v in result.items() if "/" in k}
        if per_class:
            width = max(len(k) for k in per_class)
            print("\n".join(f"  {k:<{width}}  {v:.4f}" for k, v in per_class.items()))

    def predict_fn(self, state: dict):
        """Normalised images -> the network's outputs as numpy (inference mode)."""
        return lambda images: jax.device_get(self.predict(state, jnp.asarray(images)))

    def evaluate_images(self, state: dict) -> dict:
        """Image-by-image evaluation (flip, multi-scale, top-down pose): each host takes every
        process_count-th image on its own devices, then the hosts' results are combined."""
        predict = self.predict_fn(state)
        indices = range(jax.process_index(), len(self.eval_source), jax.process_count())
        if not indices:
            raise ValueError(f"{len(self.eval_source)} evaluation images for "
                             f"{jax.process_count()} hosts: every host needs at least one")
        results = [self.task.evaluate_image(predict, dict(self.eval_source[index]))
                   for index in tqdm(indices, desc="eval", unit="image", leave=False,
                                     disable=jax.process_index() != 0)]
        if self.task.eval_combine == "sum":
            combined = jax.tree.map(lambda *xs: np.sum(xs, axis=0), *results)
        else:
            combined = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
        if jax.process_count() > 1:
            sharding.barrier("hrnet_jax evaluate_images")  # hosts finish at different times
            combined = sharding.gather_rows(combined) if self.task.eval_combine == "concat" else \
                jax.tree.map(lambda x: np.asarray(x).sum(0), sharding.process_allgather(combined))
        return combined

    def predict_files(self, path: str, output: str, boxes_file: str | None = None) -> list[str]:
        """The task's pictures of every image at `path` (a file or a folder) in `output`, from
        the latest checkpoint (or the initialisation). `boxes_file`: person boxes for pose, a
        JSON list of [x, y, w, h] or of COCO detections ({"bbox": ...}) of the one image."""
        if self.task.render is None:
            raise NotImplementedError(f"--input prediction is not available for the "
                                      f"{self.task.name} task yet")
        files = image_files(path)
        boxes = read_boxes(boxes_file) if boxes_file else None
        predict = self.predict_fn(self.restore_or_init())
        os.makedirs(output, exist_ok=True)
        written = []
        for file in tqdm(files, desc="predict", unit="image", disable=len(files) < 2):
            bgr = cv2.imread(file, cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{file}: not an image or corrupt")
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            stem = os.path.splitext(os.path.basename(file))[0]
            for suffix, picture in self.task.render(predict, image, boxes).items():
                target = os.path.join(output, f"{stem}_{suffix}.png")
                cv2.imwrite(target, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                written.append(target)
        return written

    def draw_pictures(self, state: dict) -> list[str]:
        """The first eval examples: prediction next to ground truth, DIR/pictures/*.png."""
        if jax.process_index() != 0:
            return []
        count = min(self.config.eval.num_pictures, len(self.eval_source))
        folder = os.path.join(self.workdir, "pictures")
        os.makedirs(folder, exist_ok=True)
        step = int(jax.device_get(state["step"]))
        predict = self.predict_fn(state)
        paths = []
        for index in range(count):
            picture = self.task.draw(predict, dict(self.eval_source[index]))
            path = os.path.join(folder, f"step{step:06d}_{index}.png")
            cv2.imwrite(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            paths.append(path)
        return paths


def read_boxes(path: str) -> np.ndarray:
    """Person boxes (N, 4) as x, y, w, h from a JSON list of boxes or of COCO detections."""
    with open(path) as f:
        entries = json.load(f)
    try:
        boxes = np.array([e["bbox"] if isinstance(e, dict) else e for e in entries], np.float32)
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: expected a JSON list of [x, y, w, h] boxes or of objects with "
                         f"a 'bbox' ({error})") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{path}: expected boxes of 4 numbers (x, y, w, h), got shape {boxes.shape}")
    return boxes


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_files(path: str) -> list[str]:
    """`path` itself, or the images in the folder `path` (sorted)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    return [path]


def _check_finite(step: int, figures: dict) -> None:
    values = {k: float(jax.device_get(figures[k])) for k in ("loss", "grad_norm")}
    if not all(math.isfinite(v) for v in values.values()):
        raise TrainingDiverged(f"loss {values['loss']}, gradient norm {values['grad_norm']} at "
                               f"step {step}; stopped without saving it, the last good "
                               "checkpoint is kept")


class _SigtermFlag:
    """SIGTERM (a preempted TPU VM, a cluster scheduler) asks for a checkpoint, then exit."""

    def __init__(self):
        self.raised = False
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. inside some test runners)
            pass

    def _handle(self, *_):
        self.raised = True
