"""Compile time of an experiment's real train step (trace + lower, then XLA compile), and the
median time of the compiled step.

    python scripts/compile_time.py --experiment seg_synthetic --set model.arch=hrnet_w48 \
        --set data.batch_size=1 --set data.image_size=128,256 [--set model.scan_modules=false]

Prints one JSON line (with the compiled step's temporary memory, XLA's memory_analysis). The
persistent compilation cache is off, so the figure is a cold compile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import jax


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="seg_synthetic")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=3,
                        help="steps timed after the first (0: the first step alone; -1: none)")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    from hrnet_jax import config as config_lib, experiments
    from hrnet_jax.data import pipeline
    from hrnet_jax.training import sharding
    from hrnet_jax.training.loop import Trainer

    config = experiments.load(args.experiment)
    for assignment in args.overrides:
        config_lib.apply_override(config, assignment)
    trainer = Trainer(config, tempfile.mkdtemp())
    real_batch = sharding.global_batch(trainer.mesh, next(iter(pipeline.train_loader(
        trainer.train_source, trainer.task.prepare, config.data.batch_size, 0,
        augment=trainer.task.augment))))
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                         real_batch)
    state = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                         trainer.abstract_state, trainer.state_shardings)
    start = time.perf_counter()
    lowered = trainer.train_step.jitted.lower(state, batch)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    real_state = trainer.init_fn()
    step_times = []
    for _ in range(args.repeats + 1):  # --repeats -1: compile and memory only
        start = time.perf_counter()
        real_state, figures = compiled(real_state, real_batch)
        jax.block_until_ready(figures)
        step_times.append(time.perf_counter() - start)
    print(json.dumps({"experiment": args.experiment, "overrides": args.overrides,
                      "trace_lower_s": round(lower_s, 1), "compile_s": round(compile_s, 1),
                      "hlo_lines": lowered.as_text().count("\n"),
                      "step_s": (round(statistics.median(step_times[1:] or step_times), 3)
                                 if step_times else None),
                      "temp_gib": round(memory.temp_size_in_bytes / 2**30, 2) if memory else None}))


if __name__ == "__main__":
    main()
