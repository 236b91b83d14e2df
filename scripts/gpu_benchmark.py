"""The training step's speed on one accelerator, against PyTorch AMP on the same device, same run.

    python scripts/gpu_benchmark.py           # the H100-class cases below (about 8 minutes)
    python scripts/gpu_benchmark.py --tiny    # the same code on any CPU, tiny sizes (the tests)

One JSON line a case: HRNetV2-W48 segmentation (batch 3 and 12 at 512x1024), HRNet-W32 pose
(batch 64 at 256x192), HRNet-W18 classification (batch 256 at 224), each a full train step
(forward, loss, backward, SGD-momentum update) in bfloat16 compute with float32 master weights:
images/s, model FLOPs utilisation (conv and linear MACs x 2 x 3 per trained image x images/s /
the chip's dense bf16 peak), compile seconds and peak device memory; then the same step in
PyTorch (timm's HRNet with the same head, autocast bfloat16, channels-last, eager) on the same
device, and the ratio ours / PyTorch (> 1: we are faster). The pose network of the paper fuses
into branch 0 only in its last module; timm's features fuse all four, a little more work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hrnet_jax.models import ARCHS, ArchSpec, create_model, tiny_arch
from hrnet_jax.models.summary import count_macs
from hrnet_jax.tasks.segmentation import pixel_cross_entropy

# Dense bfloat16 peak FLOP/s by device kind (vendor data sheets).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "L40S": 362e12,
             "L4": 121e12, "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5p": 459e12,
             "TPU v6 lite": 918e12}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    arch: str
    head: str
    classes: int
    batch: int
    size: tuple[int, int]


CASES = (Case("seg_w48_b3", "hrnet_w48", "segmentation", 19, 3, (512, 1024)),
         Case("seg_w48_b12", "hrnet_w48", "segmentation", 19, 12, (512, 1024)),
         Case("pose_w32_b64", "hrnet_w32", "pose", 17, 64, (256, 192)),
         Case("cls_w18_b256", "hrnet_w18", "classification", 1000, 256, (224, 224)))


def tiny(case: Case) -> Case:
    """The case at CPU scale: a width-4 HRNet, batch 2, 32x32 images."""
    return dataclasses.replace(case, arch="tiny", batch=2, size=(32, 32),
                               classes=min(case.classes, 10))


def arch_spec(case: Case) -> ArchSpec:
    return tiny_arch(4) if case.arch == "tiny" else ARCHS[case.arch]


def inputs(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Random images and the head's targets: pixel labels, 1/4-resolution heatmaps, labels."""
    rng = np.random.RandomState(0)
    height, width = case.size
    images = rng.randn(case.batch, height, width, 3).astype(np.float32)
    if case.head == "segmentation":
        return images, rng.randint(0, case.classes, (case.batch, height, width)).astype(np.int32)
    if case.head == "pose":
        return images, rng.rand(case.batch, height // 4, width // 4, case.classes).astype(np.float32)
    return images, rng.randint(0, case.classes, case.batch).astype(np.int32)


def timed_steps(step: Callable[[], Any], sync: Callable[[Any], Any], steps: int) -> float:
    """Seconds a step, after two warm-up steps, synchronising once at the end."""
    for _ in range(2):
        sync(step())
    start = time.perf_counter()
    for _ in range(steps):
        out = step()
    sync(out)
    return (time.perf_counter() - start) / steps


def jax_train_step(case: Case, variables: dict | None = None, **model_options: Any
                   ) -> tuple[Callable, Callable, list, Any, dict]:
    """The case's train step (forward, loss, backward, SGD-momentum update) in bfloat16 compute,
    its loss (params, batch_stats, images, targets) -> (loss, batch_stats), its arguments
    [params, batch_stats, opt_state, images, targets] (the batch an argument, not a constant
    XLA would fold), the model and its variables (initialised unless given).
    `model_options`: LayerConfig fields (remat, remat_saves)."""
    model = create_model(arch_spec(case), case.head, case.classes, dtype=jnp.bfloat16,
                         **model_options)
    images, targets = (jnp.asarray(a) for a in inputs(case))
    if variables is None:
        variables = jax.jit(lambda: model.init(jax.random.key(0), images[:1], train=False))()
    tx = optax.sgd(0.01, momentum=0.9)

    def loss_fn(params, batch_stats, images, targets):
        out, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                   train=True, mutable=["batch_stats"])
        out = out.astype(jnp.float32)
        if case.head == "segmentation":
            loss = pixel_cross_entropy(out, targets)
        elif case.head == "pose":
            loss = jnp.mean((out - targets) ** 2)
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(out, targets).mean()
        return loss, updates["batch_stats"]

    def train_step(params, batch_stats, opt_state, images, targets):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, images, targets)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    state = [variables["params"], variables["batch_stats"], tx.init(variables["params"]),
             images, targets]
    return train_step, loss_fn, state, model, variables


def jax_case(case: Case, steps: int, **model_options: Any) -> dict[str, Any]:
    train_step, _, state, model, variables = jax_train_step(case, **model_options)
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(*state).compile()
    compile_s = time.perf_counter() - start

    def step():
        *state[:3], loss = compiled(*state)
        return loss

    seconds = timed_steps(step, jax.block_until_ready, steps)
    device = jax.devices()[0]
    memory = device.memory_stats() or {}
    macs = count_macs(model, variables, case.size)
    peak = next((v for k, v in PEAK_BF16.items() if k in device.device_kind), None)
    images_per_s = case.batch / seconds
    return {"images_per_s": round(images_per_s, 2), "compile_s": round(compile_s, 2),
            "peak_memory_gb": (round(memory["peak_bytes_in_use"] / 2 ** 30, 2)
                               if "peak_bytes_in_use" in memory else None),
            "macs_per_image": int(macs),
            "mfu": round(macs * 2 * 3 * images_per_s / peak, 4) if peak else None,
            "device": device.device_kind}


def timm_config(arch: ArchSpec) -> dict:
    """timm's HRNet cfg of an ArchSpec (the presets are timm's own; the tiny arch is built)."""
    stage = lambda spec, block: {"num_modules": spec.num_modules, "num_branches": len(spec.widths),
                                 "block_type": block, "num_blocks": (spec.num_blocks,) * len(spec.widths),
                                 "num_channels": spec.widths, "fuse_method": "SUM"}
    stage1 = {"num_modules": 1, "num_branches": 1, "block_type": "BOTTLENECK",
              "num_blocks": (arch.stage1_blocks,), "num_channels": (arch.stage1_planes,),
              "fuse_method": "SUM"}
    return {"stem_width": arch.stem_width, "stage1": stage1,
            **{f"stage{k + 2}": stage(s, "BASIC") for k, s in enumerate(arch.stages)}}


def torch_case(case: Case, steps: int) -> dict[str, Any]:
    import torch
    from timm.models import hrnet as timm_hrnet
    from torch import nn

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = timm_config(arch_spec(case))
    if case.head == "classification":
        network = timm_hrnet.HighResolutionNet(cfg, num_classes=case.classes)
        head = nn.Identity()
    else:
        network = timm_hrnet.HighResolutionNetFeatures(cfg, feature_location="")
        widths = arch_spec(case).widths
        if case.head == "segmentation":  # HRNetV2: concat, 1x1 ConvBN-ReLU, 1x1 classifier
            head = nn.Sequential(nn.Conv2d(sum(widths), sum(widths), 1), nn.BatchNorm2d(sum(widths)),
                                 nn.ReLU(), nn.Conv2d(sum(widths), case.classes, 1))
        else:  # HRNetV1: 1x1 conv from branch 0
            head = nn.Conv2d(widths[0], case.classes, 1)
    model = nn.ModuleDict({"network": network, "head": head}).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, targets = inputs(case)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last).to(device)
    y = torch.from_numpy(targets).to(device)
    if case.head == "pose":
        y = y.permute(0, 3, 1, 2)

    def forward():
        out = model["network"](x)
        if case.head == "segmentation":
            branches = out[1:]
            size = branches[0].shape[2:]
            concat = torch.cat([branches[0]] + [nn.functional.interpolate(
                b, size, mode="bilinear", align_corners=False) for b in branches[1:]], 1)
            logits = nn.functional.interpolate(model["head"](concat), x.shape[2:], mode="bilinear",
                                               align_corners=False)
            return nn.functional.cross_entropy(logits.float(), y.long())
        if case.head == "pose":
            return nn.functional.mse_loss(model["head"](out[1]).float(), y)
        return nn.functional.cross_entropy(out.float(), y.long())

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = forward()
        loss.backward()
        optimizer.step()
        return loss

    def sync(loss):
        if device == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed_steps(step, sync, steps)
    return {"images_per_s": round(case.batch / seconds, 2), "torch": torch.__version__,
            "peak_memory_gb": (round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                               if device == "cuda" else None)}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (runs on a CPU)")
    parser.add_argument("--cases", default=",".join(c.name for c in CASES),
                        help="comma-separated subset of " + ", ".join(c.name for c in CASES))
    parser.add_argument("--steps", type=int, default=10, help="timed steps a case")
    parser.add_argument("--compare", default="torch", choices=["torch", "none"])
    parser.add_argument("--remat", default="none", choices=["none", "module", "block"],
                        help="model.remat of our step (scripts/remat_memory.py compares them)")
    parser.add_argument("--remat_saves", default="nothing", choices=["nothing", "convs"])
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.cases.split(",")}
    unknown = chosen - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {[c.name for c in CASES]}")
    results = []
    for case in CASES:
        if case.name not in chosen:
            continue
        run = tiny(case) if args.tiny else case
        result = {"case": case.name, "arch": run.arch, "head": run.head, "batch": run.batch,
                  "size": f"{run.size[0]}x{run.size[1]}", "dtype": "bfloat16",
                  "jax": jax.__version__, "remat": args.remat, "remat_saves": args.remat_saves,
                  **jax_case(run, args.steps, remat=args.remat, remat_saves=args.remat_saves)}
        if args.compare == "torch":
            theirs = torch_case(run, args.steps)
            result.update({"torch_images_per_s": theirs["images_per_s"],
                           "torch_peak_memory_gb": theirs["peak_memory_gb"],
                           "torch": theirs["torch"],
                           "ratio_jax_over_torch": round(result["images_per_s"]
                                                         / theirs["images_per_s"], 3)})
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
