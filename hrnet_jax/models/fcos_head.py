"""The FCOS detector head (Tian et al. 2019) on HRNetV2p's feature pyramid.

`DetectionHead` = the pyramid neck (hrnet_jax.models.heads.PyramidNeck) + `FCOSHead`. One set of
FCOS weights serves every level: a classification tower and a regression tower (each 4 x
conv3x3 + GroupNorm(32) + ReLU), then 3x3 convs to C class logits (bias set so that every
class starts at probability 0.01), to the 4 box distances, and to centerness (on the regression
tower, as FCOS's improved configurations do). Each level scales its distances by a learnable
scalar; distances are exp(scale x prediction) x the level's stride, positive by construction.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from hrnet_jax.models.heads import PyramidNeck
from hrnet_jax.models.layers import LayerConfig

PRIOR_PROBABILITY = 0.01
PYRAMID_STRIDES = ((4, 8, 16, 32, 64), (8, 16, 32, 64, 128))  # neck stride 1 or 2


class Tower(nn.Module):
    """4 x (conv3x3 + GroupNorm + ReLU), shared by the levels."""

    channels: int = 256
    depth: int = 4
    groups: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for index in range(self.depth):
            x = nn.Conv(self.channels, (3, 3), padding=1, name=f"conv{index}", dtype=self.dtype,
                        kernel_init=nn.initializers.normal(0.01))(x)
            x = nn.relu(nn.GroupNorm(self.groups, name=f"norm{index}", dtype=self.dtype)(x))
        return x


class FCOSHead(nn.Module):
    num_classes: int
    strides: Sequence[int] = PYRAMID_STRIDES[1]
    channels: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jnp.ndarray]) -> dict[str, list[jnp.ndarray]]:
        """Per level (N, H, W, C) -> float32 class logits (N, H, W, K), box distances l, t, r, b
        in input pixels (N, H, W, 4) and centerness logits (N, H, W)."""
        if len(levels) != len(self.strides):
            raise ValueError(f"{len(levels)} pyramid levels for {len(self.strides)} strides")
        classification = Tower(self.channels, dtype=self.dtype, name="cls_tower")
        regression = Tower(self.channels, dtype=self.dtype, name="box_tower")
        conv = lambda features, name, bias=nn.initializers.zeros: nn.Conv(
            features, (3, 3), padding=1, name=name, dtype=self.dtype,
            kernel_init=nn.initializers.normal(0.01), bias_init=bias)
        prior = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        class_logits = conv(self.num_classes, "cls_logits", nn.initializers.constant(prior))
        box = conv(4, "box_pred")
        centre = conv(1, "centerness")
        out = {"class_logits": [], "boxes": [], "centerness": []}
        for level, (x, stride) in enumerate(zip(levels, self.strides)):
            scale = self.param(f"scale{level}", nn.initializers.ones, ())
            cls_features, box_features = classification(x), regression(x)
            out["class_logits"].append(class_logits(cls_features).astype(jnp.float32))
            distances = scale * box(box_features).astype(jnp.float32)
            out["boxes"].append(jnp.exp(distances) * stride)
            out["centerness"].append(centre(box_features)[..., 0].astype(jnp.float32))
        return out


class DetectionHead(nn.Module):
    """HRNetV2p neck (strides 4..64 or 8..128) + FCOS head."""

    num_classes: int
    layers: LayerConfig
    strides: tuple[int, ...] = PYRAMID_STRIDES[1]
    channels: int = 256

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> dict[str, list[jnp.ndarray]]:
        levels = PyramidNeck(self.layers, self.channels, stride=self.strides[0] // 4,
                             name="neck")(xs, train)
        return FCOSHead(self.num_classes, self.strides, self.channels, dtype=self.layers.dtype,
                        name="fcos")(levels)
