"""The FCOS detector head (Tian et al. 2019) on HRNetV2p's feature pyramid.

`DetectionHead` = the pyramid neck (hrnet_jax.models.heads.PyramidNeck) + `FCOSHead`. One set of
FCOS weights serves every level: a classification tower and a regression tower (each 4 x
conv3x3 + GroupNorm(32) + ReLU), then 3x3 convs to C class logits (bias set so that every
class starts at probability 0.01), to the 4 box distances, and to centerness. Each level scales
its distances by a learnable scalar; distances are exp(scale x prediction), positive by
construction.

Two styles (`FCOS_STYLES`, `model.fcos_style`) hold the choices that differ between FCOS's
improved configurations and the plain FCOS of mmdet's HRNetV2p configs (whose box APs the
README quotes and whose checkpoints load with `weights.from_torch(..., bgr=True)`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from hrnet_jax.models.heads import PyramidNeck
from hrnet_jax.models.layers import LayerConfig

PRIOR_PROBABILITY = 0.01
PYRAMID_STRIDES = ((4, 8, 16, 32, 64), (8, 16, 32, 64, 128))  # neck stride 1 or 2


@dataclasses.dataclass(frozen=True)
class FCOSStyle:
    """What a variant of FCOS chooses, for the head and for the task (hrnet_jax.tasks.fcos)."""

    centerness_on_regression: bool  # centerness from the regression tower (else classification)
    distances_by_stride: bool  # exp(prediction) x the level's stride (else in pixels directly)
    tower_bias: bool  # the towers' convs have biases (mmdet's GroupNorm towers have none)
    centre_radius: float | None  # centre sampling radius in strides; None: the whole box
    box_loss: str  # "giou" (1 - GIoU) or "iou" (-log IoU, FCOS's paper and mmdet)
    score: str  # "sqrt": sqrt(p x centerness) thresholded on p; "product": p x centerness
    bgr_checkpoints: bool  # its released PyTorch checkpoints were trained on BGR images


FCOS_STYLES = {
    "improved": FCOSStyle(True, True, True, 1.5, "giou", "sqrt", False),
    # mmdet's FCOSHead defaults in its HRNetV2p configs (fcos_hrnetv2p_w*_gn-head_4x4_1x), which
    # also normalise BGR images (to_rgb=False).
    "mmdet": FCOSStyle(False, False, False, None, "iou", "product", True),
}


def style_named(name: str) -> FCOSStyle:
    if name not in FCOS_STYLES:
        raise ValueError(f"unknown FCOS style {name!r}; choose one of {', '.join(FCOS_STYLES)}")
    return FCOS_STYLES[name]


class Tower(nn.Module):
    """4 x (conv3x3 + GroupNorm + ReLU), shared by the levels."""

    channels: int = 256
    depth: int = 4
    groups: int = 32
    bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for index in range(self.depth):
            x = nn.Conv(self.channels, (3, 3), padding=1, name=f"conv{index}", dtype=self.dtype,
                        use_bias=self.bias, kernel_init=nn.initializers.normal(0.01))(x)
            # epsilon 1e-5 as PyTorch's GroupNorm (Flax's default is 1e-6)
            x = nn.relu(nn.GroupNorm(self.groups, epsilon=1e-5, name=f"norm{index}",
                                     dtype=self.dtype)(x))
        return x


class FCOSHead(nn.Module):
    num_classes: int
    strides: Sequence[int] = PYRAMID_STRIDES[1]
    channels: int = 256
    style: str = "improved"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jnp.ndarray]) -> dict[str, list[jnp.ndarray]]:
        """Per level (N, H, W, C) -> float32 class logits (N, H, W, K), box distances l, t, r, b
        in input pixels (N, H, W, 4) and centerness logits (N, H, W)."""
        if len(levels) != len(self.strides):
            raise ValueError(f"{len(levels)} pyramid levels for {len(self.strides)} strides")
        style = style_named(self.style)
        classification = Tower(self.channels, bias=style.tower_bias, dtype=self.dtype,
                               name="cls_tower")
        regression = Tower(self.channels, bias=style.tower_bias, dtype=self.dtype, name="box_tower")
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
            distances = jnp.exp(scale * box(box_features).astype(jnp.float32))
            out["boxes"].append(distances * stride if style.distances_by_stride else distances)
            centre_features = box_features if style.centerness_on_regression else cls_features
            out["centerness"].append(centre(centre_features)[..., 0].astype(jnp.float32))
        return out


@dataclasses.dataclass(unsafe_hash=True)
class FCOSOptions:
    """`model.detector` of FCOS (`--set model.detector.style=mmdet`)."""

    strides: tuple[int, ...] = PYRAMID_STRIDES[1]  # the pyramid's levels: 8..128 or 4..64
    channels: int = 256  # the pyramid's and the towers' width (a multiple of 32: GroupNorm)
    style: str = "improved"  # FCOS_STYLES

    def check(self) -> None:
        if tuple(self.strides) not in PYRAMID_STRIDES:
            raise ValueError(f"pyramid strides {tuple(self.strides)}: choose "
                             f"{' or '.join(map(str, PYRAMID_STRIDES))}")
        if self.channels % 32:
            raise ValueError(f"model.detector.channels={self.channels}: the FCOS towers' "
                             "GroupNorm needs a multiple of 32")
        style_named(self.style)  # an unknown style names the known ones


class DetectionHead(nn.Module):
    """HRNetV2p neck (strides 4..64 or 8..128) + FCOS head."""

    num_classes: int
    layers: LayerConfig
    options: FCOSOptions = FCOSOptions()

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool, targets: dict | None = None,
                 image_sizes: jnp.ndarray | None = None) -> dict[str, list[jnp.ndarray]]:
        del targets, image_sizes  # FCOS assigns its targets in the loss and decodes after
        o = self.options
        levels = PyramidNeck(self.layers, o.channels, stride=o.strides[0] // 4,
                             name="neck")(xs, train)
        return FCOSHead(self.num_classes, tuple(o.strides), o.channels, o.style,
                        dtype=self.layers.dtype, name="fcos")(levels)
