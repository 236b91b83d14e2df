"""The parts of the two-stage detectors on HRNetV2p's pyramid (Faster / Mask R-CNN, Cascade
R-CNN, HTC), with mmdet's module names in the comments for the weight conversion.

`RPN` (mmdet `rpn_head`): one 3x3 conv + ReLU shared by the levels (`rpn_conv`), then 1x1
convs to one objectness logit (`rpn_cls`) and 4 box deltas (`rpn_reg`) per anchor, laid out
cell-major, anchor-minor as `detection.anchors.grid_anchors`, and its proposals.
`BoxHead` (mmdet `roi_head.bbox_head[.i]`) and `MaskHead` (`roi_head.mask_head[.i]`) work on
the RoIs pooled by `detection.roi_align`; `SemanticHead` (`roi_head.semantic_head`) is HTC's
semantic branch. `models.two_stage.TwoStageDetector` puts them together on the pyramid neck.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax.detection.anchors import grid_anchors
from hrnet_jax.detection.proposals import propose
from hrnet_jax.models.layers import resize_bilinear

PYRAMID_STRIDES = (4, 8, 16, 32, 64)  # the RPN's levels; RoIs are pooled from the first four

# mmdet initialises the RPN's and the R-CNN heads' convs N(0, 0.01).
_NORMAL_001 = nn.initializers.normal(0.01)


class RPN(nn.Module):
    """The region proposal network on the pyramid levels (strides PYRAMID_STRIDES)."""

    num_anchors: int = 3
    channels: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jnp.ndarray], image_sizes: jnp.ndarray, pre_nms: int,
                 keep: int) -> dict[str, jnp.ndarray]:
        """Per level (N, H, W, C) and each image's size (N, 2) (height, width) -> `objectness`
        logits (N, A) and `deltas` (N, A, 4) of all levels' `anchors` (A, 4), float32, and
        each image's `proposals` (N, keep, 4) with `proposal_valid` (N, keep): per level the
        `pre_nms` best, NMS 0.7, the `keep` best; not differentiated through, as mmdet."""
        shared = nn.Conv(self.channels, (3, 3), padding=1, kernel_init=_NORMAL_001,
                         dtype=self.dtype, name="shared")
        objectness_conv = nn.Conv(self.num_anchors, (1, 1), kernel_init=_NORMAL_001,
                                  dtype=self.dtype, name="objectness")
        delta_conv = nn.Conv(self.num_anchors * 4, (1, 1), kernel_init=_NORMAL_001,
                             dtype=self.dtype, name="deltas")
        objectness, deltas = [], []
        for x in levels:
            features = nn.relu(shared(x))
            n = x.shape[0]
            objectness.append(objectness_conv(features).astype(jnp.float32).reshape(n, -1))
            deltas.append(delta_conv(features).astype(jnp.float32).reshape(n, -1, 4))
        anchors = [jnp.asarray(grid_anchors(level.shape[1:3], stride))
                   for level, stride in zip(levels, PYRAMID_STRIDES)]
        proposals = jax.vmap(functools.partial(propose, anchors=anchors, pre_nms=pre_nms,
                                               keep=keep))(
            jax.lax.stop_gradient(objectness), jax.lax.stop_gradient(deltas),
            image_size=image_sizes)
        return {"objectness": jnp.concatenate(objectness, 1),
                "deltas": jnp.concatenate(deltas, 1), "anchors": jnp.concatenate(anchors),
                "proposals": proposals["boxes"], "proposal_valid": proposals["valid"]}


class BoxHead(nn.Module):
    """mmdet's Shared2FCBBoxHead / torchvision's TwoMLPHead + FastRCNNPredictor: RoI features
    (..., 7, 7, C) flattened channel-major as PyTorch does (so `fc1`'s weights convert by a
    transposition alone), two FC + ReLU of `hidden` width, then class logits (`num_classes` + 1,
    background last as mmdet) and class-specific deltas (`num_classes` x 4), or one set of 4
    when `class_agnostic` (a cascade's stages)."""

    num_classes: int
    hidden: int = 1024
    class_agnostic: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, rois: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        x = jnp.moveaxis(rois, -1, -3).reshape(*rois.shape[:-3], -1)  # (..., C * 7 * 7)
        for name in ("fc1", "fc2"):
            x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=name)(x))
        logits = nn.Dense(self.num_classes + 1, dtype=self.dtype, name="classifier",
                          kernel_init=_NORMAL_001)(x)
        sets = 1 if self.class_agnostic else self.num_classes
        deltas = nn.Dense(sets * 4, dtype=self.dtype, name="deltas",
                          kernel_init=nn.initializers.normal(0.001))(x).astype(jnp.float32)
        if self.class_agnostic:
            return logits.astype(jnp.float32), deltas
        return logits.astype(jnp.float32), deltas.reshape(*deltas.shape[:-1], sets, 4)


class MaskHead(nn.Module):
    """mmdet's FCNMaskHead / torchvision's MaskRCNNHeads + MaskRCNNPredictor: 4 x (3x3 conv +
    ReLU), a 2x2 stride-2 transposed conv + ReLU (14x14 -> 28x28), a 1x1 conv to one mask logit
    map a class. With `residual` (HTC's HTCMaskHead after the first stage, its mask information
    flow) the previous stage's features pass a 1x1 conv + ReLU (`conv_res`) and are added to
    the RoI features first."""

    num_classes: int
    channels: int = 256
    num_convs: int = 4
    residual: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, rois: jnp.ndarray, previous: jnp.ndarray | None = None,
                 outputs: str = "logits") -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """(..., S, S, C) -> (..., 2S, 2S, num_classes) float32 logits (`outputs` "logits"),
        the features after the convs (..., S, S, C) that HTC passes to the next stage
        ("features"), or both ("both"). `previous`: the last stage's features (residual
        heads; None for the first stage)."""
        batch_shape = rois.shape[:-3]
        x = rois.reshape(-1, *rois.shape[-3:])
        if self.residual:
            conv_res = nn.Conv(self.channels, (1, 1), dtype=self.dtype, name="conv_res")
            if previous is not None:
                x = x + nn.relu(conv_res(previous.reshape(x.shape)))
            elif self.is_initializing():
                conv_res(x)  # created with the first call, used from the second stage on
        for index in range(self.num_convs):
            x = nn.relu(nn.Conv(self.channels, (3, 3), padding=1, dtype=self.dtype,
                                name=f"conv{index}")(x))
        features = x.reshape(*batch_shape, *x.shape[1:])
        if outputs == "features" and not self.is_initializing():
            return features
        x = nn.relu(Upsample2x(self.channels, dtype=self.dtype, name="upsample")(x))
        out = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
        out = out.astype(jnp.float32).reshape(*batch_shape, *out.shape[1:])
        return {"logits": out, "features": features, "both": (out, features)}[outputs]


class Upsample2x(nn.Module):
    """A 2x2 transposed conv of stride 2 (non-overlapping): every input pixel becomes a 2x2
    block, out[2i + a, 2j + b] = kernel[a, b] @ x[i, j] + bias. The kernel is (2, 2, out, in),
    the layout of flax's ConvTranspose(transpose_kernel=True): PyTorch's ConvTranspose2d weight
    (in, out, 2, 2) converts to it like a conv weight (out, in, kh, kw) does to (kh, kw, in,
    out)."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", nn.initializers.he_normal(in_axis=-1, out_axis=-2),
                            (2, 2, self.features, x.shape[-1]))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        n, h, w, _ = x.shape
        out = jnp.einsum("nhwc,aboc->nhawbo", x.astype(self.dtype), kernel.astype(self.dtype))
        return out.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class SemanticHead(nn.Module):
    """HTC's semantic branch (mmdet's FusedSemanticHead): every pyramid level resized
    (bilinear, corners aligned) to the `fusion_level`'s size and passed through its own 1x1
    conv + ReLU (`lateral_convs`), summed; 4 x (3x3 conv + ReLU) (`convs`); a 1x1 conv to the
    stuff-and-thing class logits (`conv_logits`) and a 1x1 conv + ReLU to the features that are
    pooled into the RoI features (`conv_embedding`)."""

    num_classes: int = 183
    channels: int = 256
    num_convs: int = 4
    fusion_level: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Pyramid levels (N, H_l, W_l, C) -> logits (N, H, W, num_classes) float32 and
        features (N, H, W, channels), at the fusion level's size."""
        conv = functools.partial(nn.Conv, dtype=self.dtype)
        size = levels[self.fusion_level].shape[1:3]
        x = 0.0
        for index, level in enumerate(levels):
            if index != self.fusion_level:
                level = resize_bilinear(level, size, align_corners=True)
            x = x + nn.relu(conv(self.channels, (1, 1), name=f"lateral{index}")(level))
        for index in range(self.num_convs):
            x = nn.relu(conv(self.channels, (3, 3), padding=1, name=f"conv{index}")(x))
        logits = conv(self.num_classes, (1, 1), name="classifier")(x).astype(jnp.float32)
        return logits, nn.relu(conv(self.channels, (1, 1), name="embedding")(x))
