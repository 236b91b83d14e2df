"""The trainer, read top to bottom: build, restore, step, log, checkpoint, evaluate, draw.

Every task runs through here; a task only supplies its loss, metric and pictures
(hrnet_jax.tasks). Logs go to a progress bar and to DIR/metrics.jsonl, one JSON object a line.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import signal
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from hrnet_jax import config as config_lib, storage
from hrnet_jax.data import pipeline
from hrnet_jax.models import DETECTORS, create_model, tiny_arch
from hrnet_jax.tasks import Predict, Record, Task, make_task
from hrnet_jax.training import optim, pretrained, sharding, step as step_lib
from hrnet_jax.training.checkpoint import Checkpointer, remove_partial_saves
from hrnet_jax.training.workdir import MetricsWriter, TensorBoard, config_changes, record_config


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(RuntimeError):
    """Ctrl-C (SIGINT) stopped training after saving the step it had reached."""


def build_model(config: config_lib.ExperimentConfig):
    m = config.model
    arch = tiny_arch(m.width) if m.arch == "tiny" else m.arch
    overrides = {"dtype": jnp.dtype(m.dtype), "scan_modules": m.scan_modules,
                 "norm_eval": m.norm_eval, "remat": m.remat, "remat_saves": m.remat_saves}
    if m.upsample is not None:
        overrides["upsample"] = m.upsample
    if m.bn_momentum is not None:
        overrides["bn_momentum"] = m.bn_momentum
    # The R-CNNs detect inside the model (their mask heads run on the final boxes), with the
    # evaluation's settings.
    inference = None
    if m.head in DETECTORS and DETECTORS[m.head].two_stage:
        settings = config.eval
        inference = dict(score_threshold=settings.score_threshold,
                         nms_threshold=settings.nms_threshold,
                         detections=settings.max_detections, pre_nms=settings.pre_nms_top_k)
    return create_model(arch, m.head, m.num_classes, detector=m.detector if m.head in DETECTORS else None,
                        inference=inference, **overrides)


class Trainer:
    """Holds what one run builds once: mesh, model, task, compiled steps, checkpoints."""

    def __init__(self, config: config_lib.ExperimentConfig, workdir: str,
                 devices: list | None = None):
        self.config, self.workdir = config, workdir
        # Checked before anything is written or compiled.
        config_lib.validate(config)
        config_changes(workdir, config)  # another run in this workdir: refused, nothing touched
        self.mesh = sharding.make_mesh(config.mesh, devices)
        if config.data.batch_size % self.mesh.size:
            raise config_lib.ConfigError(
                f"data.batch_size={config.data.batch_size} does not split over the "
                f"{self.mesh.size} devices of the mesh (data={self.mesh.shape['data']} x "
                f"fsdp={self.mesh.shape['fsdp']}): use a multiple of {self.mesh.size}")
        # A bucket that does not exist or may not be written is said now, in one line.
        storage.check_writable(workdir)
        self.task: Task = make_task(config)
        self.model = build_model(config)
        num_steps = config.loop.num_steps
        self.tx = optim.make_optimizer(config.optim, num_steps)
        image_shape = (*config.data.image_size, 3)
        init = lambda: step_lib.init_state(self.model, self.tx, image_shape, config.loop.seed)
        self.abstract_state = jax.eval_shape(init)
        self.state_shardings = sharding.state_shardings(self.mesh, self.abstract_state)
        # What identifies the compiled programs on this host, for "took N s last time".
        program = (f"{config.name}|{config.model.arch}:{config.model.width}:{config.model.head}|"
                   f"{config.data.image_size}x{config.data.batch_size}|{config.model.dtype}|"
                   f"{jax.default_backend()}x{self.mesh.size}")
        self.init_fn = sharding.CompiledOnFirstCall(
            jax.jit(init, out_shardings=self.state_shardings), "initialisation", program)
        batch_sharding = sharding.batch_sharding(self.mesh)
        replicated = sharding.replicated(self.mesh)
        self.train_step = sharding.CompiledOnFirstCall(jax.jit(
            step_lib.make_train_step(self.model, self.tx, self.task, config.optim.grad_accum_steps,
                                     config.loop.seed),
            in_shardings=(self.state_shardings, batch_sharding),
            out_shardings=(self.state_shardings, replicated), donate_argnums=0), "train_step",
            program)
        self.eval_step = sharding.CompiledOnFirstCall(jax.jit(
            step_lib.make_eval_step(self.model, self.task),
            in_shardings=(self.state_shardings, batch_sharding), out_shardings=replicated),
            "eval_step", program)
        self.predict = jax.jit(step_lib.make_predict(self.model, self.task.postprocess))
        self.checkpoints = Checkpointer(storage.join(workdir, "checkpoints"),
                                        config.checkpoint.every_steps, config.checkpoint.keep)
        self.metrics = MetricsWriter(workdir)
        self.tensorboard = TensorBoard(workdir)
        if config.model.pretrained and self.checkpoints.latest_step() is None:
            # Weights that do not fit are named now, before the initialisation compiles (a
            # minute for a large model), checked against the variables' shapes alone.
            pretrained.initialise_from(config.model.pretrained, self.model, {
                "params": self.abstract_state["params"],
                "batch_stats": self.abstract_state["batch_stats"]})

    # -- data: opened when first needed (predicting on files needs no dataset) ---------------
    @functools.cached_property
    def sources(self) -> tuple[Any, Any]:
        return self.task.dataset.sources(self.config.data)

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
        variables, account = pretrained.initialise_from(self.config.model.pretrained,
                                                        self.model, fresh)
        if jax.process_index() == 0:
            print(account)
        for collection in ("params", "batch_stats"):
            state[collection] = jax.device_put(variables[collection],
                                               self.state_shardings[collection])
        return state

    def save(self, state: dict, data_iterator: Any, force: bool = False) -> None:
        """Start saving `state` (in the background); a failed save (a bucket gone, a full disk)
        is a StorageError naming the folder, the checkpoints already there left as they are."""
        step = int(jax.device_get(state["step"]))
        with storage.errors_named(self.checkpoints.manager.directory,
                                  f"save the step {step} checkpoint to"):
            self.checkpoints.save(step, state, data_iterator, config_lib.to_dict(self.config),
                                  force)

    # -- training ---------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        config = self.config
        if jax.process_index() == 0:  # (the workdir's lock is this run's: main took it)
            removed = remove_partial_saves(self.checkpoints.manager.directory)
            if removed:
                print(f"removed {len(removed)} unfinished checkpoint save(s) from "
                      f"{self.checkpoints.manager.directory}: {', '.join(removed)}")
        loader = pipeline.train_loader(self.train_source, self.task.prepare, config.data.batch_size,
                                       config.data.seed, config.data.worker_count, self.task.augment,
                                       self.task.mix_batch)
        # Batches are read and put on the devices a step ahead, in a thread; its state is that
        # of the batches handed out, so checkpoints resume exactly.
        data_iterator = pipeline.Prefetch(iter(loader), functools.partial(sharding.global_batch,
                                                                          self.mesh))
        state = self.restore_or_init(data_iterator)
        first_step = int(jax.device_get(state["step"]))
        record_config(self.workdir, config, first_step)
        self.tensorboard.start(first_step)
        replayed = self.metrics.drop_replayed(first_step)
        if replayed:
            print(f"resumed at step {first_step}: {replayed} later rows of metrics.jsonl, "
                  "trained again now, moved to metrics.replayed.jsonl")
        elif first_step and jax.process_index() == 0:
            print(f"resumed at step {first_step}")
        num_steps = config.loop.num_steps
        stop = _StopRequest()
        progress = tqdm(total=num_steps, initial=first_step, desc=config.name, unit="step",
                        disable=jax.process_index() != 0, dynamic_ncols=True)
        last_log_time, last_log_step = time.perf_counter(), first_step
        # Each step's figures stay on the device until the next log or save, where all of them
        # are checked at once: no host sync a step, and a NaN still names its own step.
        unchecked: list[tuple[int, dict]] = []
        try:
            for step in range(first_step + 1, num_steps + 1):
                state, figures = self.train_step(state, next(data_iterator))
                unchecked.append((step, figures))
                progress.update(1)
                if step % config.loop.log_every == 0 or step == num_steps:
                    _check_finite(unchecked)
                    now = time.perf_counter()
                    logged = {k: float(v) for k, v in jax.device_get(figures).items()}
                    logged["lr"] = optim.current_learning_rate(config.optim, num_steps, step - 1)
                    logged["images_per_s"] = (step - last_log_step) * config.data.batch_size / (
                        now - last_log_time)
                    last_log_time, last_log_step = now, step
                    self.metrics.write(step, "train", logged)
                    self.tensorboard.scalars(step, "train", logged)
                    progress.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{logged['lr']:.2e}",
                                         img_s=f"{logged['images_per_s']:.1f}")
                if step % config.checkpoint.every_steps == 0 or step == num_steps or stop.raised:
                    _check_finite(unchecked)  # never checkpoint a diverged state
                    self.save(state, data_iterator, force=True)
                if config.loop.eval_every and step % config.loop.eval_every == 0 and step != num_steps:
                    _check_finite(unchecked)  # a diverged state is not evaluated either
                    self.evaluate(state)
                if stop.raised:
                    progress.write(f"{stop.raised}: saved step {step}, exiting (the same "
                                   "command resumes from it)")
                    break
        except TrainingDiverged as error:
            self.checkpoints.wait()  # a save in flight completes: it is the last good one
            progress.close()
            kept = self.checkpoints.latest_step()
            raise TrainingDiverged(f"{error}; the last good checkpoint, step {kept}, is kept in "
                                   f"{self.checkpoints.manager.directory}" if kept is not None
                                   else f"{error}; no checkpoint had been saved yet") from None
        finally:
            progress.close()  # the bar's line ended, so that an error's line starts its own
            stop.restore()
            data_iterator.close()
            with storage.errors_named(self.checkpoints.manager.directory,
                                      "finish saving the checkpoints to"):
                self.checkpoints.wait()
        progress.close()
        if stop.raised == "SIGINT":
            self.tensorboard.close()
            raise Interrupted(f"saved step {step} in {self.checkpoints.manager.directory}; the "
                              "same command resumes from it")
        result = self.evaluate(state) if not stop.raised else {}
        if not stop.raised:
            pictures = self.draw_pictures(state)
            if pictures:
                print(f"pictures: {storage.path(pictures[0]).parent} ({len(pictures)} new); "
                      f"figures: {self.metrics.path} and {self.tensorboard.folder}; "
                      f"checkpoints: {self.checkpoints.manager.directory}")
        self.tensorboard.close()
        return result

    # -- evaluation and pictures ------------------------------------------------------------
    def evaluate(self, state: dict | None = None) -> dict[str, float]:
        """The task's evaluation of `state` (default: the latest checkpoint), reported."""
        state = self.restore_or_init() if state is None else state
        step = int(jax.device_get(state["step"]))
        result = self.task.evaluate(EvaluationPass(self, state))
        self.report(step, result)
        return result

    def report(self, step: int, result: dict[str, float]) -> None:
        """Eval figures to metrics.jsonl and the terminal: the headline metric, the other
        figures, and per-class figures (`iou/road`, ...) as a table."""
        if jax.process_index() != 0:
            return
        overall = {k: v for k, v in result.items() if "/" not in k}
        print(f"step {step} eval: " + ", ".join(f"{k} {v:.4f}" for k, v in overall.items()))
        per_class = {k: v for k, v in result.items() if "/" in k}
        if per_class:
            width = max(len(k) for k in per_class)
            print("\n".join(f"  {k:<{width}}  {v:.4f}" for k, v in per_class.items()))
        self.metrics.write(step, "eval", result)  # after printing: a failed write loses nothing
        self.tensorboard.scalars(step, "eval", result)

    def predict_fn(self, state: dict) -> step_lib.Network:
        """The network of `state` in inference mode, as the tasks call it."""
        return step_lib.Network(self.predict, state)

    def draw_pictures(self, state: dict) -> list[str]:
        """The first eval examples: prediction next to ground truth, DIR/pictures/*.png."""
        if jax.process_index() != 0:
            return []
        count = min(self.config.eval.num_pictures, len(self.eval_source))
        folder = storage.join(self.workdir, "pictures")
        step = int(jax.device_get(state["step"]))
        predict = self.predict_fn(state)
        paths = []
        for index in range(count):
            picture = self.task.draw(predict, dict(self.eval_source[index]))
            path = storage.join(folder, f"step{step:06d}_{index}.png")
            storage.write_png(path, picture)
            self.tensorboard.picture(step, str(index), picture)
            paths.append(path)
        return paths


class EvaluationPass:
    """One pass over the evaluation set for a task's `evaluate` (hrnet_jax.tasks.Evaluation):
    batched on the devices (`sums`) or image by image on the host (`rows`); each host takes its
    share of the set, and every host ends with the combined result."""

    def __init__(self, trainer: Trainer, state: dict):
        self.trainer, self.state = trainer, state
        self.predict: Predict = trainer.predict_fn(state)

    def sums(self) -> dict[str, np.ndarray]:
        trainer, batch_size = self.trainer, self.trainer.config.data.eval_batch_size
        source, sums = trainer.eval_source, None
        batches = pipeline.eval_batches(source, trainer.task.prepare, batch_size)
        for local in tqdm(batches, desc="eval", unit="batch", leave=False,
                          disable=jax.process_index() != 0,
                          total=math.ceil(len(source) / batch_size)):
            out = trainer.eval_step(self.state, sharding.global_batch(trainer.mesh, local))
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        return jax.device_get(sums)

    def rows(self, evaluate_image: Callable[[Predict, Record], dict[str, np.ndarray]]
             ) -> dict[str, np.ndarray]:
        source = self.trainer.eval_source
        indices = range(jax.process_index(), len(source), jax.process_count())
        if not indices:
            raise ValueError(f"{len(source)} evaluation images for {jax.process_count()} hosts: "
                             "every host needs at least one")
        # Images at once on host threads (eval.host_threads), rows kept in the images' order.
        with concurrent.futures.ThreadPoolExecutor(self.trainer.config.eval.host_threads) as pool:
            results = list(tqdm(pool.map(lambda index: evaluate_image(self.predict,
                                                                      dict(source[index])),
                                         indices),
                                desc="eval", unit="image", leave=False, total=len(indices),
                                disable=jax.process_index() != 0))
        combined = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
        if jax.process_count() > 1:
            sharding.barrier("hrnet_jax evaluation rows")  # hosts finish at different times
            combined = sharding.gather_rows(combined)
        return combined


def _check_finite(unchecked: list[tuple[int, dict]]) -> None:
    """Raise TrainingDiverged naming the first step whose loss or gradient norm is not finite
    (one transfer for all of them); empties the list."""
    figures = jax.device_get([{k: f[k] for k in ("loss", "grad_norm")} for _, f in unchecked])
    steps = [step for step, _ in unchecked]
    unchecked.clear()
    for step, values in zip(steps, figures):
        if not all(math.isfinite(float(v)) for v in values.values()):
            raise TrainingDiverged(f"loss {float(values['loss'])}, gradient norm "
                                   f"{float(values['grad_norm'])} at step {step}; stopped without "
                                   "saving it")


class _StopRequest:
    """SIGTERM (a preempted TPU VM, a cluster scheduler) and the first Ctrl-C (SIGINT) ask for a
    checkpoint, then an exit; a second Ctrl-C aborts at once (KeyboardInterrupt). `raised` is
    the first signal's name."""

    def __init__(self):
        self.raised = ""
        self.previous = {}
        for number in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass

    def _handle(self, number, _frame):
        if self.raised == "SIGINT" and number == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: no more waiting
        self.raised = self.raised or signal.Signals(number).name
        if number == signal.SIGINT:
            print("\nCtrl-C: saving the step reached, then exiting (Ctrl-C again aborts "
                  "without saving)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
