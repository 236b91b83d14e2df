"""Parameter count and multiply-adds of a model, as the HRNet papers report them.

    python -m hrnet_jax.models.summary hrnet_w48 --head segmentation --size 1024x2048

The official "GFLOPs" count the multiply-adds of convolutions and linear layers only (not
BatchNorm, activations or resampling) and divide by 2^30; `gflops_official` reproduces that
(seg W48 at 1024x2048 = 696.2, pose W32 at 256x192 = 7.1, cls W18 at 224 = 3.99).
Everything is traced abstractly (`jax.eval_shape`): nothing is computed, so any size is instant.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.models import ARCHS, HEADS, create_model


def count_params(variables: Any) -> int:
    """Number of trainable parameters (the 'params' collection; BN statistics excluded)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"])))


def count_macs(model: nn.Module, variables: Any, size: tuple[int, int]) -> int:
    """Multiply-adds of every conv and dense layer for one image of `size` (H, W)."""
    macs = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.Dense)):
            kernel = module.variables["params"]["kernel"]
            # kernel (kh, kw, in, out) or (in, out): each output element costs prod(kernel)/out.
            per_output = int(np.prod(kernel.shape[:-1]))
            macs.append(per_output * int(np.prod(out.shape[1:])))
        return out

    def forward(v, x):
        with nn.intercept_methods(interceptor):
            return model.apply(v, x, train=False)

    jax.eval_shape(forward, variables, jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
    return int(sum(macs))


def summarize(arch: str, head: str | None, size: tuple[int, int],
              num_classes: int | None = None) -> dict[str, Any]:
    model = create_model(arch, head, num_classes)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3)),
                                                  train=False))
    macs = count_macs(model, variables, size)
    return {"arch": arch, "head": head, "size": f"{size[0]}x{size[1]}",
            "num_classes": model.num_classes, "params": count_params(variables), "macs": macs,
            "gflops_official": round(macs / 2 ** 30, 2)}


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, like 256x192; got {text!r}") from None
    return height, width


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arch", choices=list(ARCHS))
    parser.add_argument("--head", default=None, choices=[h for h in HEADS if h],
                        help="task head; omit for the bare backbone")
    parser.add_argument("--size", type=parse_size, default=(224, 224), help="HxW input size")
    parser.add_argument("--classes", type=int, default=None, help="classes / joints / landmarks")
    args = parser.parse_args(argv)
    info = summarize(args.arch, args.head, args.size, args.classes)
    print(f"{info['arch']} head={info['head']} input {info['size']}: "
          f"{info['params']:,} parameters, {info['macs']:,} multiply-adds "
          f"({info['gflops_official']} official GFLOPs = MACs / 2^30)")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
