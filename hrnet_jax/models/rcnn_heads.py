"""The heads of the two-stage detectors on HRNetV2p's pyramid (Faster / Mask R-CNN, with
mmdet's module names in the comments for the weight conversion).

`RPNHead` (mmdet `rpn_head`): one 3x3 conv + ReLU shared by the levels (`rpn_conv`), then 1x1
convs to one objectness logit (`rpn_cls`) and 4 box deltas (`rpn_reg`) per anchor, laid out
cell-major, anchor-minor as `tasks.boxes.grid_anchors`.
`BoxHead` (mmdet `roi_head.bbox_head`) and `MaskHead` (`roi_head.mask_head`) work on the RoIs
pooled by `models.roi_align`. `FasterRCNNHead` puts them together on the pyramid neck.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax.models.heads import PyramidNeck
from hrnet_jax.models.layers import LayerConfig
from hrnet_jax.models.roi_align import roi_align
from hrnet_jax.tasks import rcnn
from hrnet_jax.tasks.boxes import grid_anchors

PYRAMID_STRIDES = (4, 8, 16, 32, 64)  # the RPN's levels; RoIs are pooled from the first four

# mmdet initialises the RPN's and the R-CNN heads' convs N(0, 0.01).
_NORMAL_001 = nn.initializers.normal(0.01)


class RPNHead(nn.Module):
    num_anchors: int = 3
    channels: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jnp.ndarray]) -> tuple[list[jnp.ndarray], list[jnp.ndarray]]:
        """Per level (N, H, W, C) -> objectness logits (N, H*W*A) and deltas (N, H*W*A, 4),
        float32."""
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
        return objectness, deltas


class BoxHead(nn.Module):
    """mmdet's Shared2FCBBoxHead / torchvision's TwoMLPHead + FastRCNNPredictor: RoI features
    (..., 7, 7, C) flattened channel-major as PyTorch does (so `fc1`'s weights convert by a
    transposition alone), two FC + ReLU of `hidden` width, then class logits (`num_classes` + 1,
    background last as mmdet) and class-specific deltas (`num_classes` x 4)."""

    num_classes: int
    hidden: int = 1024
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, rois: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        x = jnp.moveaxis(rois, -1, -3).reshape(*rois.shape[:-3], -1)  # (..., C * 7 * 7)
        for name in ("fc1", "fc2"):
            x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=name)(x))
        logits = nn.Dense(self.num_classes + 1, dtype=self.dtype, name="classifier",
                          kernel_init=_NORMAL_001)(x)
        deltas = nn.Dense(self.num_classes * 4, dtype=self.dtype, name="deltas",
                          kernel_init=nn.initializers.normal(0.001))(x)
        return (logits.astype(jnp.float32),
                deltas.astype(jnp.float32).reshape(*deltas.shape[:-1], self.num_classes, 4))


class MaskHead(nn.Module):
    """mmdet's FCNMaskHead / torchvision's MaskRCNNHeads + MaskRCNNPredictor: 4 x (3x3 conv +
    ReLU), a 2x2 stride-2 transposed conv + ReLU (14x14 -> 28x28), a 1x1 conv to one mask logit
    map a class."""

    num_classes: int
    channels: int = 256
    num_convs: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, rois: jnp.ndarray) -> jnp.ndarray:
        """(..., S, S, C) -> (..., 2S, 2S, num_classes) float32 logits."""
        batch_shape = rois.shape[:-3]
        x = rois.reshape(-1, *rois.shape[-3:])
        for index in range(self.num_convs):
            x = nn.relu(nn.Conv(self.channels, (3, 3), padding=1, dtype=self.dtype,
                                name=f"conv{index}")(x))
        x = nn.relu(Upsample2x(self.channels, dtype=self.dtype, name="upsample")(x))
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.float32).reshape(*batch_shape, *logits.shape[1:])


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


class FasterRCNNHead(nn.Module):
    """Faster R-CNN on HRNetV2p (mmdet's faster_rcnn_hrnetv2p configs), and with `masks` Mask
    R-CNN (mask_rcnn_hrnetv2p): the pyramid neck (strides 4..64), the RPN on every level, its
    proposals (per level the best 2 x `proposals` anchors in training, `proposals` in
    inference, NMS 0.7 per level, the best `proposals` kept), RoIAlign 7x7 (adaptive sampling)
    from the first four levels, the box head; RoIAlign 14x14 and the mask head.

    Training (`targets`: the batch's `boxes`, `labels`, `box_mask`): the RoIs are the proposals
    plus the ground truth, sampled (`rois` an image, at most a quarter positive, positives in
    the first slots); the sampling keys come from the 'dropout' stream. Proposals are not
    differentiated through, as mmdet. Returns `rpn_objectness` (N, A), `rpn_deltas` (N, A, 4),
    `anchors` (A, 4), `rpn_key`, `logits` (N, R, K + 1), `deltas` (N, R, K, 4), `samples`
    (rcnn.sample_rois' targets) and with masks `mask_logits` (N, P, 28, 28, K) of the first
    P = rois x positive_fraction slots, where the positives are.

    Inference returns the detections, decoded here as mmdet's test_cfg (score above
    `score_threshold`, the `pre_nms` best (RoI, class) pairs, class-wise NMS at
    `nms_threshold`, `detections` kept): `boxes` (N, D, 4) in input pixels, `scores`,
    `classes`, `valid`, and with masks `masks` (N, D, 28, 28), each detection's mask
    probabilities for its class from the mask head run on the final boxes (as mmdet)."""

    num_classes: int
    layers: LayerConfig
    channels: int = 256
    proposals: int = 1000  # kept an image, after NMS
    rois: int = 512  # sampled an image in training
    positive_fraction: float = 0.25
    masks: bool = False
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections: int = 100
    pre_nms: int = 1000

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool, targets: dict | None = None
                 ) -> dict[str, Any]:
        levels = PyramidNeck(self.layers, self.channels, stride=1, name="neck")(xs, train)
        objectness, deltas = RPNHead(3, self.channels, self.layers.dtype, name="rpn")(levels)
        image_shape = (xs[0].shape[1] * 4, xs[0].shape[2] * 4)
        anchors = [jnp.asarray(grid_anchors(level.shape[1:3], stride))
                   for level, stride in zip(levels, PYRAMID_STRIDES)]
        # mmdet: the best 2000 anchors a level in training, 1000 in inference
        propose = functools.partial(rcnn.propose, anchors=anchors, image_shape=image_shape,
                                    pre_nms=2 * self.proposals if train else self.proposals,
                                    keep=self.proposals)
        proposals = jax.vmap(propose)(jax.lax.stop_gradient(objectness),
                                      jax.lax.stop_gradient(deltas))
        rois, roi_valid = proposals["boxes"], proposals["valid"]
        pool = functools.partial(roi_align, levels[:4], PYRAMID_STRIDES[:4])
        box_head = BoxHead(self.num_classes, dtype=self.layers.dtype, name="box_head")
        mask_head = (MaskHead(self.num_classes, self.channels, dtype=self.layers.dtype,
                              name="mask_head") if self.masks else None)
        if not train:
            logits, box_deltas = box_head(pool(rois, 7))
            detect = functools.partial(rcnn.detect, image_shape=image_shape,
                                       score_threshold=self.score_threshold,
                                       iou_threshold=self.nms_threshold, keep=self.detections,
                                       pre_nms=self.pre_nms)
            found = jax.vmap(detect)(logits, box_deltas, rois, roi_valid)
            if mask_head is not None:
                mask_logits = mask_head(pool(found["boxes"], 14))
                own = jnp.take_along_axis(
                    mask_logits, jnp.maximum(found["classes"], 0)[..., None, None, None], -1)
                found["masks"] = jax.nn.sigmoid(own[..., 0])
            return found
        if targets is None:
            raise ValueError("the two-stage detectors train on their targets: call them with "
                             "targets={'boxes', 'labels', 'box_mask'}")
        key = self.make_rng("dropout")
        sample = functools.partial(rcnn.sample_rois, num_classes=self.num_classes,
                                   count=self.rois, positive_fraction=self.positive_fraction)
        samples = jax.vmap(sample)(rois, roi_valid, targets["boxes"], targets["labels"],
                                   targets["box_mask"],
                                   jax.random.split(jax.random.fold_in(key, 0), xs[0].shape[0]))
        out = {"rpn_objectness": jnp.concatenate(objectness, 1),
               "rpn_deltas": jnp.concatenate(deltas, 1), "anchors": jnp.concatenate(anchors),
               "rpn_key": jax.random.fold_in(key, 1), "samples": samples}
        out["logits"], out["deltas"] = box_head(pool(samples["rois"], 7))
        if mask_head is not None:  # the positives are in the first slots
            positive_slots = int(self.rois * self.positive_fraction)
            out["mask_logits"] = mask_head(pool(samples["rois"][:, :positive_slots], 14))
        return out
