"""Building blocks shared by the backbone and the heads: conv+BN, residual blocks, resampling.

Everything is NHWC with explicit padding: a 3x3 conv pads ((1, 1), (1, 1)) at every stride, the
way PyTorch does. 'SAME' would pad a stride-2 conv asymmetrically and break parity with the
reference weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# He-normal on fan-out, as timm and torchvision initialise convs feeding a ReLU.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_or_matmul(lhs, rhs, window_strides, padding, **kwargs):
    """`lax.conv_general_dilated`, except that a 1x1 stride-1 conv is a matmul over channels.

    XLA:CPU runs matmuls about twice as fast as the equivalent 1x1 convolution; on accelerators
    both lower to the same kernels. The parameters keep the conv layout (1, 1, in, out).
    """
    pointwise = rhs.shape[:2] == (1, 1) and tuple(window_strides) == (1, 1) and all(
        tuple(p) == (0, 0) for p in padding) and kwargs.get("feature_group_count", 1) == 1
    if not pointwise:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
    return lax.dot_general(lhs, rhs[0, 0], (((lhs.ndim - 1,), (0,)), ((), ())),
                           precision=kwargs.get("precision"))


REMAT = ("none", "module", "block")
REMAT_SAVES = {"nothing": None, "convs": jax.checkpoint_policies.dots_saveable}


@functools.lru_cache(maxsize=None)
def _checkpointed(module: type[nn.Module], saves: str) -> type[nn.Module]:
    # static_argnums counts self: `train` is a Python bool the body branches on.
    return nn.remat(module, static_argnums=(2,), policy=REMAT_SAVES[saves])


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """Settings every conv, BatchNorm and resampling of one network shares.

    bn_momentum is Flax's (the weight of the old statistic): PyTorch's momentum m is 1 - m here,
    so the references' 0.1 is 0.9 and the segmentation repo's 0.01 is 0.99.
    `dtype` is the compute dtype; parameters and BatchNorm statistics stay float32.
    `upsample` is 'nearest' (integer factor, as classification, pose and timm) or 'bilinear'
    (to the target size, as segmentation and landmarks).
    `norm_eval` keeps the backbone's BatchNorm in inference mode while training (running
    statistics used, never updated), as mmdet's norm_eval for small-batch fine-tuning.
    `scan_modules` runs the identical modules of a stage as one `nn.scan` body: the same
    function and the same variables layout, a much smaller program to compile.
    `folded_batchnorm`: every BatchNorm already folded into the conv before it
    (`hrnet_jax.surgery.fold_batchnorm`): convs carry a bias, norms are the identity;
    inference only.
    `remat`: which units recompute their activations in the backward pass instead of keeping
    them (jax.checkpoint): "none", "module" (each HighResolutionModule, and stage 1 whole) or
    "block" (each residual block). `remat_saves`: what such a unit keeps all the same,
    "nothing" or "convs" (the convolutions' outputs: BatchNorm, ReLU, the fuse's sums and
    resampling are recomputed). Same function, same variables, same gradients.
    """

    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    upsample: str = "nearest"
    align_corners: bool = False
    scan_modules: bool = False
    norm_eval: bool = False
    folded_batchnorm: bool = False
    remat: str = "none"
    remat_saves: str = "nothing"

    def __post_init__(self):
        if self.upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {self.upsample!r}")
        if self.remat not in REMAT:
            raise ValueError(f"remat must be one of {', '.join(REMAT)}, got {self.remat!r}")
        if self.remat_saves not in REMAT_SAVES:
            raise ValueError(f"remat_saves must be one of {', '.join(REMAT_SAVES)}, got "
                             f"{self.remat_saves!r}")

    def checkpointed(self, module: type[nn.Module], unit: str) -> type[nn.Module]:
        """`module` (called as (x, train)) under jax.checkpoint if `remat` is `unit`."""
        if self.remat != unit:
            return module
        return _checkpointed(module, self.remat_saves)

    def conv(self, features: int, kernel: int = 3, stride: int = 1, bias: bool = False,
             name: str | None = None, kernel_init: Any = conv_init) -> nn.Conv:
        pad = (kernel - 1) // 2
        return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                       padding=((pad, pad), (pad, pad)), use_bias=bias or self.folded_batchnorm,
                       dtype=self.dtype,
                       param_dtype=jnp.float32, kernel_init=kernel_init,
                       conv_general_dilated=conv_or_matmul, name=name)

    def norm(self, train: bool, name: str | None = None) -> Any:
        if self.folded_batchnorm:
            if train:
                raise ValueError("a model with BatchNorm folded into its convs is for inference; "
                                 "train the unfolded model")
            return lambda x: x
        return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                            epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=jnp.float32,
                            name=name)

    def resize(self, x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
        """Upsample `x` to spatial `size` with this network's mode."""
        if self.upsample == "nearest":
            return upsample_nearest(x, size)
        return resize_bilinear(x, size, self.align_corners)


def upsample_nearest(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Nearest upsampling by an integer factor as a broadcast + reshape.

    A gather (`jax.image.resize(..., 'nearest')`) made the train step ~3x slower on XLA:CPU;
    the broadcast lowers to a plain copy and its gradient to a reshape + sum.
    """
    n, h, w, c = x.shape
    fh, fw = size[0] // h, size[1] // w
    if fh * h != size[0] or fw * w != size[1]:
        raise ValueError(f"nearest upsampling needs an integer factor: {h}x{w} -> {size[0]}x{size[1]}")
    if fh == 1 and fw == 1:
        return x
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, fh, w, fw, c))
    return x.reshape(n, h * fh, w * fw, c)


@functools.lru_cache(maxsize=None)
def interpolation_matrix(size_in: int, size_out: int, align_corners: bool) -> np.ndarray:
    """(size_out, size_in) linear-interpolation weights with PyTorch's sampling rule."""
    dst = np.arange(size_out, dtype=np.float64)
    if align_corners:
        src = dst * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros_like(dst)
    else:
        src = np.maximum((dst + 0.5) * (size_in / size_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    weights = np.zeros((size_out, size_in), np.float64)
    np.add.at(weights, (np.arange(size_out), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(size_out), hi), frac)
    return weights.astype(np.float32)


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int], align_corners: bool = False,
                    precision: jax.lax.PrecisionLike = None) -> jnp.ndarray:
    """Bilinear resize of NHWC `x` to `size`, identical to `F.interpolate(mode='bilinear')`.

    Separable: one small matmul per axis, which XLA runs as dense GEMMs on every backend.
    `precision`: the matmuls' (inference passes HIGHEST: a GPU's default float32 matmul rounds
    its inputs to TF32's 10-bit mantissa).
    """
    _, h, w, _ = x.shape
    if (h, w) == tuple(size):
        return x
    rows = jnp.asarray(interpolation_matrix(h, size[0], align_corners), x.dtype)
    cols = jnp.asarray(interpolation_matrix(w, size[1], align_corners), x.dtype)
    x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=precision)
    return jnp.einsum("pw,nowc->nopc", cols, x, precision=precision)


class ConvBN(nn.Module):
    """Conv, BatchNorm and an optional ReLU: the unit of transitions, fuses and heads."""

    features: int
    layers: LayerConfig
    kernel: int = 3
    stride: int = 1
    bias: bool = False
    relu: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = self.layers.conv(self.features, self.kernel, self.stride, self.bias, name="conv")(x)
        x = self.layers.norm(train, name="bn")(x)
        return nn.relu(x) if self.relu else x


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut (expansion 1): the blocks of stages 2-4."""

    planes: int
    layers: LayerConfig
    expansion = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        shortcut = x
        y = nn.relu(self.layers.norm(train, "bn1")(self.layers.conv(self.planes, name="conv1")(x)))
        y = self.layers.norm(train, "bn2")(self.layers.conv(self.planes, name="conv2")(y))
        if x.shape[-1] != self.planes:
            shortcut = self.layers.norm(train, "downsample_bn")(
                self.layers.conv(self.planes, 1, name="downsample_conv")(x))
        return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (expansion 4): stage 1 and the classification head's incre modules."""

    planes: int
    layers: LayerConfig
    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out = self.planes * self.expansion
        shortcut = x
        y = nn.relu(self.layers.norm(train, "bn1")(self.layers.conv(self.planes, 1, name="conv1")(x)))
        y = nn.relu(self.layers.norm(train, "bn2")(self.layers.conv(self.planes, 3, name="conv2")(y)))
        y = self.layers.norm(train, "bn3")(self.layers.conv(out, 1, name="conv3")(y))
        if x.shape[-1] != out:
            shortcut = self.layers.norm(train, "downsample_bn")(
                self.layers.conv(out, 1, name="downsample_conv")(x))
        return nn.relu(y + shortcut)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
