"""The task heads of the HRNet papers, each on the list of branch features (high-res first).

- ClassificationHead: the incre head of HRNet-Image-Classification (and timm).
- RepresentationHead: HRNetV2, concatenated upsampled branches -> 1x1 ConvBN -> 1x1 classifier;
  segmentation's `last_layer` and the facial-landmark repo's `head` are this same head.
- PoseHead: HRNetV1, a 1x1 conv from branch 0 to K heatmaps.
- PyramidNeck: HRNetV2p, concatenated upsampled branches -> 1x1 conv -> average pools -> 3x3 convs.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from hrnet_jax.models.layers import Bottleneck, ConvBN, LayerConfig


def concat_upsampled(xs: list[jnp.ndarray], layers: LayerConfig) -> jnp.ndarray:
    """Upsample every branch to branch 0's size and concatenate channels (C + 2C + 4C + 8C)."""
    size = xs[0].shape[1:3]
    return jnp.concatenate([xs[0]] + [layers.resize(x, size) for x in xs[1:]], axis=-1)


class ClassificationHead(nn.Module):
    """Per branch a Bottleneck (32/64/128/256 planes -> 128..1024 channels); 3x3 stride-2
    ConvBNs carry the sum downward to the lowest resolution; a 1x1 ConvBN to 2048; global
    average pool; a linear classifier."""

    num_classes: int
    layers: LayerConfig
    head_planes: tuple[int, ...] = (32, 64, 128, 256)
    features: int = 2048

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> jnp.ndarray:
        incre = [Bottleneck(self.head_planes[k], self.layers, name=f"incre{k}")(x, train)
                 for k, x in enumerate(xs)]
        y = incre[0]
        for k in range(1, len(xs)):
            y = incre[k] + ConvBN(self.head_planes[k] * Bottleneck.expansion, self.layers,
                                  stride=2, bias=True, name=f"downsamp{k - 1}")(y, train)
        y = ConvBN(self.features, self.layers, kernel=1, bias=True, name="final")(y, train)
        y = jnp.mean(y.astype(jnp.float32), axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32, name="classifier")(y)


class RepresentationHead(nn.Module):
    """HRNetV2: all branches upsampled and concatenated, mixed by a 1x1 ConvBN (with bias, as the
    references), then a 1x1 conv to one channel a class (or landmark) at 1/4 resolution."""

    num_classes: int
    layers: LayerConfig

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> jnp.ndarray:
        x = concat_upsampled(xs, self.layers)
        self.sow("intermediates", "concat", x)  # a feature tap (hrnet_jax.surgery.tap)
        x = ConvBN(x.shape[-1], self.layers, kernel=1, bias=True, name="proj")(x, train)
        return self.layers.conv(self.num_classes, 1, bias=True, name="classifier")(x)


class PoseHead(nn.Module):
    """HRNetV1: a 1x1 conv (with bias) from branch 0 to K heatmaps at 1/4 resolution.

    Initialised as the reference, N(0, 0.001): the heatmaps start near zero instead of at the
    scale of He-initialised features, which MSE regression to unnormalised Gaussians needs."""

    num_classes: int
    layers: LayerConfig

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> jnp.ndarray:
        return self.layers.conv(self.num_classes, 1, bias=True, kernel_init=nn.initializers.normal(0.001),
                                name="classifier")(xs[0])


class PyramidNeck(nn.Module):
    """HRNetV2p: concatenated upsampled branches -> 1x1 conv (bias, no BN/ReLU) -> `features`
    channels, average-pooled by 1, 2, 4, 8, 16 (strides 4..64), one 3x3 conv (bias) a level.
    With `stride` 2 the 3x3 convs halve every level (strides 8..128: mmdet's HRFPN for FCOS)."""

    layers: LayerConfig
    features: int = 256
    num_levels: int = 5
    stride: int = 1

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> list[jnp.ndarray]:
        del train  # no BatchNorm in the neck
        # HRFPN resamples bilinearly whatever the backbone does.
        layers = dataclasses.replace(self.layers, upsample="bilinear", align_corners=False)
        x = concat_upsampled(xs, layers)
        self.sow("intermediates", "concat", x)
        x = layers.conv(self.features, 1, bias=True, name="reduction")(x)
        levels = []
        for k in range(self.num_levels):
            pooled = x if k == 0 else nn.avg_pool(x, window_shape=(2 ** k, 2 ** k), strides=(2 ** k, 2 ** k))
            levels.append(layers.conv(self.features, 3, stride=self.stride, bias=True,
                                           name=f"fpn{k}")(pooled))
        return levels
