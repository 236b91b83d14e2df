"""What each remat setting (model.remat, model.remat_saves) costs and buys: the train step's
memory from XLA's analysis of the compiled step, its time, and the largest batch that fits.

    python scripts/remat_memory.py [--cases seg_w48_b3,pose_w32_b64] [--hbm_gib 16] [--tiny]

The cases are gpu_benchmark.py's train steps (bfloat16 compute, float32 master weights, SGD
with momentum): HRNetV2-W48 segmentation at 512x1024 and HRNet-W32 pose at 256x192. For each
setting the step is compiled here at batch 1 and 2: `temp` is XLA's temporary memory
(activations kept for the backward pass and workspace), `per_image` its growth a batch image,
`fixed` what does not grow (weights, statistics, momentum, the step's outputs; the batch's
own images and targets are counted per image); the largest
batch in `--hbm_gib` is (HBM - fixed) / per_image, rounded down. That memory is this machine's
compiler's buffer assignment, and XLA:CPU's scheduler does not realise remat's savings (it runs
the recomputations early: a 20-layer MLP checkpointed in groups of 5 shows 176 -> 200 MiB of
temp here). So the script also reports what the forward keeps for the backward
(`kept_for_backward`: jax's saved residuals, the same on every backend), and the largest batch
by it; on an accelerator, gpu_benchmark.py --remat measures the peak memory itself.
`step_s` is the batch-1 step on this machine's CPU: its ratio to "none" is the recomputation's
price. One JSON line a case and setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from typing import Any

import jax
from jax._src.ad_checkpoint import saved_residuals  # what print_saved_residuals prints

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gpu_benchmark  # noqa: E402  (the cases and their train step)

SETTINGS = (("none", "nothing"), ("module", "nothing"), ("module", "convs"),
            ("block", "nothing"), ("block", "convs"))
GIB, MIB = 2 ** 30, 2 ** 20


def kept_for_backward(case: gpu_benchmark.Case, variables: dict, remat: str, saves: str) -> int:
    """The bytes the forward keeps for the backward (traced, not compiled)."""
    _, loss_fn, state, _, _ = gpu_benchmark.jax_train_step(case, variables, remat=remat,
                                                           remat_saves=saves)
    params, batch_stats, _, images, targets = state
    kept = saved_residuals(lambda p: loss_fn(p, batch_stats, images, targets)[0], params)
    return sum(math.prod(aval.shape) * aval.dtype.itemsize for aval, _ in kept)


def compiled_step(case: gpu_benchmark.Case, variables: dict, remat: str, saves: str
                  ) -> tuple[Any, list]:
    step, _, state, _, _ = gpu_benchmark.jax_train_step(case, variables, remat=remat,
                                                        remat_saves=saves)
    return jax.jit(step, donate_argnums=(0, 1, 2)).lower(*state).compile(), state


def measure(case: gpu_benchmark.Case, remat: str, saves: str, variables: dict,
            hbm_gib: float, kept_only: bool = False) -> dict[str, Any]:
    kept = {batch: kept_for_backward(dataclasses.replace(case, batch=batch), variables, remat,
                                     saves) for batch in (1, 2)}
    kept_per_image = kept[2] - kept[1]
    result = {"case": case.name, "arch": case.arch, "size": f"{case.size[0]}x{case.size[1]}",
              "remat": remat, "remat_saves": saves,
              "kept_for_backward_mib_per_image": round(kept_per_image / MIB, 1)}
    if kept_only:
        return result
    sizes = {}
    for batch in (1, 2):
        compiled, state = compiled_step(dataclasses.replace(case, batch=batch), variables,
                                        remat, saves)
        analysis = compiled.memory_analysis()
        sizes[batch] = (analysis.temp_size_in_bytes, analysis.argument_size_in_bytes
                        + analysis.output_size_in_bytes - analysis.alias_size_in_bytes)
        if batch == 1:
            state = [jax.tree.map(lambda x: x.copy(), part) for part in state]
            *state[:3], loss = compiled(*state)  # the first run, then a timed one
            jax.block_until_ready(loss)
            start = time.perf_counter()
            *state[:3], loss = compiled(*state)
            jax.block_until_ready(loss)
            step_s = time.perf_counter() - start
    total = {batch: temp + other for batch, (temp, other) in sizes.items()}
    per_image = total[2] - total[1]
    fixed = total[1] - per_image

    def largest(per: int) -> int | None:
        return math.floor((hbm_gib * GIB - fixed) / per) if per > 0 else None

    return {**result, "temp_mib_batch1": round(sizes[1][0] / MIB, 1),
            "per_image_mib": round(per_image / MIB, 1), "fixed_mib": round(fixed / MIB, 1),
            f"largest_batch_in_{hbm_gib:g}_gib": largest(per_image),
            f"largest_batch_in_{hbm_gib:g}_gib_by_kept": largest(kept_per_image),
            "step_s_batch1_cpu": round(step_s, 2)}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="seg_w48_b3,pose_w32_b64",
                        help="comma-separated gpu_benchmark cases")
    parser.add_argument("--hbm_gib", type=float, default=16.0, help="the chip's memory (v5e: 16)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the tests)")
    parser.add_argument("--kept_only", action="store_true",
                        help="only what the forward keeps (traced in seconds, not compiled)")
    args = parser.parse_args(argv)
    cases = {case.name: case for case in gpu_benchmark.CASES}
    unknown = set(args.cases.split(",")) - set(cases)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(cases)}")
    results = []
    for name in args.cases.split(","):
        case = gpu_benchmark.tiny(cases[name]) if args.tiny else cases[name]
        *_, variables = gpu_benchmark.jax_train_step(dataclasses.replace(case, batch=1))
        for remat, saves in SETTINGS:
            results.append(measure(case, remat, saves, variables, args.hbm_gib, args.kept_only))
            print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
