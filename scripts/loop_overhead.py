"""What the trainer's loop costs: its steps/s against a bare loop of the same compiled step.

    python scripts/loop_overhead.py [--experiment seg_synthetic:smoke] [--steps 200] \
        [--set data.worker_count=2]

The trainer runs `--steps` steps twice (logging, checkpoints, prefetching as configured):
once over the experiment's own data pipeline and once over 8 of its batches made beforehand
and handed out again and again, which leaves only the loop's own cost (the figure the goal
">= 0.95 with a tiny model" is about: on a 2-core machine the pipeline's reading, augmentation
and grain's own bookkeeping share the cores with the step, which no loop can hide). Each rate is the median of
metrics.jsonl's images_per_s after the first logging window (which holds the compile). The bare
loop runs the trainer's own compiled step over batches already on the device, synchronising
once at the end. Prints one JSON line with the three rates and both ratios against bare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import jax


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="seg_synthetic:smoke")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    from hrnet_jax import config as config_lib, experiments
    from hrnet_jax.data import pipeline
    from hrnet_jax.training import sharding
    from hrnet_jax.training.loop import Trainer

    config = experiments.load(args.experiment)
    config.loop.num_steps, config.loop.log_every = args.steps, max(args.steps // 10, 1)
    config.loop.eval_every, config.checkpoint.every_steps = 0, max(args.steps // 2, 1)
    config.eval.num_pictures = 0
    for assignment in args.overrides:
        config_lib.apply_override(config, assignment)

    def trainer_rate(premade: list | None = None) -> tuple[Trainer, float]:
        workdir = tempfile.mkdtemp()
        trainer = Trainer(config, workdir)
        real_loader = pipeline.train_loader
        if premade:
            pipeline.train_loader = lambda *args, **kwargs: Premade(premade)
        try:
            trainer.train()
        finally:
            pipeline.train_loader = real_loader
        with open(f"{workdir}/metrics.jsonl") as f:
            rows = [json.loads(line) for line in f]
        rates = [r["images_per_s"] for r in rows if r["split"] == "train"][1:]
        return trainer, statistics.median(rates) / config.data.batch_size

    trainer, pipeline_rate = trainer_rate()
    loader = iter(pipeline.train_loader(trainer.train_source, trainer.task.prepare,
                                        config.data.batch_size, config.data.seed, 0,
                                        trainer.task.augment, trainer.task.mix_batch))
    host_batches = [next(loader) for _ in range(8)]
    _, loop_rate = trainer_rate(premade=host_batches)
    batches = [sharding.global_batch(trainer.mesh, batch) for batch in host_batches]
    state = trainer.restore_or_init()
    for batch in batches[:2]:  # warm
        state, figures = trainer.train_step(state, batch)
    jax.block_until_ready(figures)
    start = time.perf_counter()
    for step in range(args.steps):
        state, figures = trainer.train_step(state, batches[step % len(batches)])
    jax.block_until_ready(figures)
    bare_rate = args.steps / (time.perf_counter() - start)
    result = {"experiment": args.experiment, "overrides": args.overrides, "steps": args.steps,
              "trainer_steps_per_s": round(pipeline_rate, 2),
              "trainer_premade_batches_steps_per_s": round(loop_rate, 2),
              "bare_steps_per_s": round(bare_rate, 2),
              "ratio": round(pipeline_rate / bare_rate, 3),
              "ratio_premade_batches": round(loop_rate / bare_rate, 3)}
    print(json.dumps(result))
    return result


class Premade:
    """Host batches handed out in turn, endlessly; checkpointable like grain's iterator."""

    def __init__(self, batches: list):
        self.batches, self.position = batches, 0

    def __iter__(self) -> "Premade":
        return self

    def __next__(self) -> dict:
        self.position += 1
        return self.batches[(self.position - 1) % len(self.batches)]

    def get_state(self) -> bytes:
        return str(self.position).encode()

    def set_state(self, state: bytes) -> None:
        self.position = int(state)


if __name__ == "__main__":
    main()
