"""Speed of our model against the PyTorch reference, measured in one process on one machine.

    python -m hrnet_jax.benchmark --arch hrnet_w18 --head classification --batch 8 --size 224 \
        --compare timm

Prints one JSON line: median seconds of inference (ours with BatchNorm folded into the convs, as
served) and of a full train step (forward, backward, SGD-momentum update) for JAX and for timm, and the ratios torch / jax (> 1: we are faster), plus
the JAX compile times. Both frameworks use every core of the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hrnet_jax.models import ARCHS, create_model
from hrnet_jax.surgery import fold_batchnorm


def median_seconds(step: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jax_steps(arch: str, head: str | None, images: np.ndarray, labels: np.ndarray,
              dtype: Any) -> tuple[Callable, Callable, dict[str, float]]:
    """Compiled inference and train-step closures over a freshly initialised model."""
    model = create_model(arch, head, dtype=dtype)
    x = jnp.asarray(images)
    y = jnp.asarray(labels)
    variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1], train=False))()
    tx = optax.sgd(0.01, momentum=0.9)
    opt_state = tx.init(variables["params"])

    def loss_fn(params, batch_stats):
        out, state = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                 mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
        out = out if head == "classification" else sum(jnp.mean(f) for f in jax.tree.leaves(out))
        loss = (optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), y).mean()
                if head == "classification" else out)
        return loss, state["batch_stats"]

    def train_step(params, batch_stats, opt_state):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    # Inference as served: BatchNorm folded into the convs (hrnet_jax.surgery.fold_batchnorm).
    folded_model, folded = fold_batchnorm(model, variables)
    infer = jax.jit(lambda v, x: folded_model.apply(v, x, train=False))
    train = jax.jit(train_step, donate_argnums=(0, 1, 2))
    compile_s = {}
    start = time.perf_counter()
    infer = infer.lower(folded, x).compile()
    compile_s["inference"] = time.perf_counter() - start
    start = time.perf_counter()
    train = train.lower(variables["params"], variables["batch_stats"], opt_state).compile()
    compile_s["train"] = time.perf_counter() - start
    state = [variables["params"], variables["batch_stats"], opt_state]

    def run_infer():
        jax.block_until_ready(infer(folded, x))

    def run_train():
        *state[:], loss = train(*state)
        jax.block_until_ready(loss)

    return run_infer, run_train, compile_s


def timm_steps(arch: str, head: str | None, images: np.ndarray,
               labels: np.ndarray) -> tuple[Callable, Callable]:
    import timm
    import torch

    kwargs = {} if head == "classification" else {"features_only": True, "feature_location": ""}
    model = timm.create_model(arch, **kwargs)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).long()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run_infer():
        model.eval()
        with torch.inference_mode():
            model(x)

    def run_train():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = (torch.nn.functional.cross_entropy(out, y) if head == "classification"
                else sum(f.mean() for f in out[1:]))
        loss.backward()
        optimizer.step()

    return run_infer, run_train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="hrnet_w18", choices=list(ARCHS))
    parser.add_argument("--head", default="classification", choices=["classification", "none"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--compare", default="timm", choices=["timm", "none"])
    args = parser.parse_args(argv)
    head = None if args.head == "none" else args.head

    rng = np.random.RandomState(0)
    images = rng.randn(args.batch, args.size, args.size, 3).astype(np.float32)
    labels = rng.randint(0, 1000, args.batch).astype(np.int32)
    result: dict[str, Any] = {
        "arch": args.arch, "head": args.head, "batch": args.batch, "size": args.size,
        "dtype": args.dtype, "device": str(jax.devices()[0].device_kind),
        "machine": platform.processor() or platform.machine(), "jax": jax.__version__}
    infer, train, compile_s = jax_steps(args.arch, head, images, labels, jnp.dtype(args.dtype))
    result["jax_compile_s"] = {k: round(v, 2) for k, v in compile_s.items()}
    result["jax_inference_s"] = median_seconds(infer, args.repeats)
    result["jax_train_s"] = median_seconds(train, args.repeats)
    if args.compare == "timm":
        import torch
        t_infer, t_train = timm_steps(args.arch, head, images, labels)
        result["torch"] = torch.__version__
        result["torch_threads"] = torch.get_num_threads()
        result["torch_inference_s"] = median_seconds(t_infer, args.repeats)
        result["torch_train_s"] = median_seconds(t_train, args.repeats)
        result["inference_ratio_torch_over_jax"] = round(
            result["torch_inference_s"] / result["jax_inference_s"], 3)
        result["train_ratio_torch_over_jax"] = round(
            result["torch_train_s"] / result["jax_train_s"], 3)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
