"""The two-stage detectors on HRNetV2p as one loop over R-CNN stages (mmdet's configs for
HRNetV2p): Faster R-CNN and Mask R-CNN are one stage; Cascade R-CNN and Cascade Mask R-CNN
three, each trained on the boxes the previous one refined (Cai & Vasconcelos 2018); the Hybrid
Task Cascade (Chen et al. 2019) interleaves box and mask branches, passes mask features from
stage to stage, and adds a semantic branch's features to every RoI's.

What differs between them is data (`RCNNOptions`: each stage's IoU, coder stds and loss weight,
the box losses' smooth-L1 beta, HTC's switches), not code. The parts are in `rcnn_heads`, the
operations (anchors, proposals, sampling, RoIAlign, decoding) in hrnet_jax.detection.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax.detection.coder import decode_deltas
from hrnet_jax.detection.decode import box_detections
from hrnet_jax.detection.roi_align import roi_align
from hrnet_jax.detection.sampler import positive_slots, sample_rois
from hrnet_jax.models.heads import PyramidNeck
from hrnet_jax.models.layers import LayerConfig
from hrnet_jax.models.rcnn_heads import PYRAMID_STRIDES, RPN, BoxHead, MaskHead, SemanticHead

SEMANTIC_STRIDE = 8  # HTC fuses the pyramid at its second level


@dataclasses.dataclass(unsafe_hash=True)
class RCNNOptions:
    """`model.detector` of the R-CNN family (`--set model.detector.rois=64`); each detector's
    description (models.detectors) gives its own defaults."""

    channels: int = 256  # the pyramid's and the RPN's width
    proposals: int = 1000  # inference: the best a level before NMS, and kept after it
    train_pre_nms: int = 2000  # training: the best a level before NMS...
    train_proposals: int = 1000  # ...and kept after it (a cascade keeps 2000)
    rois: int = 512  # sampled an image for each stage in training
    positive_fraction: float = 0.25
    # One entry a stage (four coder stds a stage): its assigner's IoU, its deltas' stds and the
    # weight of its losses.
    stage_ious: tuple[float, ...] = (0.5,)
    stage_stds: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    stage_weights: tuple[float, ...] = (1.0,)
    class_agnostic: bool = False  # one set of deltas for every class (the cascades')
    rpn_beta: float = 0.0  # the RPN's box loss: smooth L1 with this beta (0: L1)
    box_beta: float = 0.0  # the stages' box loss, likewise
    interleaved: bool = False  # HTC: each stage's mask branch trains on its refined boxes
    mask_info_flow: bool = False  # HTC: mask features passed from stage to stage
    semantic_classes: int = 0  # HTC: the semantic branch's classes (COCO-stuff's 183); 0: none
    semantic_weight: float = 0.2  # ...and its loss weight

    @property
    def stages(self) -> int:
        return len(self.stage_ious)

    def stds(self, stage: int) -> tuple[float, ...]:
        return tuple(self.stage_stds[4 * stage:4 * stage + 4])

    def check(self) -> None:
        """Settings no detector can run, named."""
        count = self.stages
        if count < 1 or len(self.stage_weights) != count or len(self.stage_stds) != 4 * count:
            raise ValueError(f"model.detector: {count} stage_ious, {len(self.stage_weights)} "
                             f"stage_weights and {len(self.stage_stds)} stage_stds; give one IoU "
                             "and one weight a stage and four stds a stage")
        if count > 1 and not self.class_agnostic:
            raise ValueError("model.detector: a cascade refines its boxes with class-agnostic "
                             "deltas; set class_agnostic=true")
        ranges = {"positive_fraction": self.positive_fraction,
                  **{f"stage_ious[{i}]": v for i, v in enumerate(self.stage_ious)}}
        bad = [f"{k}={v}" for k, v in ranges.items() if not 0 < v <= 1]
        if bad:
            raise ValueError(f"model.detector.{', '.join(bad)}: must be in (0, 1]")


def stage_name(kind: str, stage: int, stages: int) -> str:
    """A stage's module name: `box_head` alone, `box_head0`, `box_head1`, ... in a cascade."""
    return kind if stages == 1 else f"{kind}{stage}"


class TwoStageDetector(nn.Module):
    """The pyramid neck (strides 4..64), the RPN on every level and its proposals, then the
    R-CNN stages: RoIAlign 7x7 (adaptive sampling) from the first four levels, the box head;
    with masks, RoIAlign 14x14 and the mask head.

    Training (`targets`: the batch's `boxes`, `labels`, `box_mask`) returns the RPN's
    `rpn_objectness` (N, A), `rpn_deltas` (N, A, 4), `anchors` (A, 4), `rpn_key`, HTC's
    `semantic_logits`, and `stages`, one dict a stage: `logits` (N, R, K + 1), `deltas`,
    `samples` (detection.sampler.sample_rois) and with masks `mask_logits` (N, P, 28, 28, K) of
    `mask_samples` (the positives' slots of the samples the mask branch drew). Sampling keys
    come from the 'dropout' stream; no gradient flows through proposals or refined boxes.

    Inference returns the detections, decoded as mmdet's test_cfg (the stages' class logits
    averaged, the last stage's boxes; score above `score_threshold`, the `pre_nms` best (RoI,
    class) pairs, class-wise NMS at `nms_threshold`, `detections` kept), clipped to each
    image's size: `boxes` (N, D, 4) in input pixels, `scores`, `classes`, `valid`, and with
    masks `masks` (N, D, 28, 28), each detection's mask probabilities for its class, averaged
    over the stages' mask heads run on the final boxes."""

    num_classes: int
    layers: LayerConfig
    options: RCNNOptions = RCNNOptions()
    masks: bool = False
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections: int = 100
    pre_nms: int = 1000

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool, targets: dict | None = None,
                 image_sizes: jnp.ndarray | None = None) -> dict[str, Any]:
        o, dtype = self.options, self.layers.dtype
        levels = PyramidNeck(self.layers, o.channels, stride=1, name="neck")(xs, train)
        n = xs[0].shape[0]
        if image_sizes is None:  # each image fills the canvas
            image_sizes = jnp.asarray([[xs[0].shape[1] * 4, xs[0].shape[2] * 4]] * n)
        image_sizes = jnp.asarray(image_sizes, jnp.float32)
        rpn = RPN(3, o.channels, dtype, name="rpn")(
            levels, image_sizes, o.train_pre_nms if train else o.proposals,
            o.train_proposals if train else o.proposals)
        semantic_logits = semantic = None
        if o.semantic_classes:
            semantic_logits, semantic = SemanticHead(o.semantic_classes, o.channels,
                                                     dtype=dtype, name="semantic_head")(levels)
        pool = functools.partial(_pool, levels[:4], semantic)
        box_heads = [BoxHead(self.num_classes, class_agnostic=o.class_agnostic, dtype=dtype,
                             name=stage_name("box_head", i, o.stages)) for i in range(o.stages)]
        mask_heads = [MaskHead(self.num_classes, o.channels, residual=o.mask_info_flow and i > 0,
                               dtype=dtype, name=stage_name("mask_head", i, o.stages))
                      for i in range(o.stages)] if self.masks else []
        if not train:
            return self.detect(rpn["proposals"], rpn["proposal_valid"], image_sizes, pool,
                               box_heads, mask_heads)
        if targets is None:
            raise ValueError("the two-stage detectors train on their targets: call them with "
                             "targets={'boxes', 'labels', 'box_mask'}")
        key = self.make_rng("dropout")
        out = {"rpn_objectness": rpn["objectness"], "rpn_deltas": rpn["deltas"],
               "anchors": rpn["anchors"], "rpn_key": jax.random.fold_in(key, 0), "stages": []}
        if semantic_logits is not None:
            out["semantic_logits"] = semantic_logits
        rois, roi_valid = rpn["proposals"], rpn["proposal_valid"]
        for stage in range(o.stages):
            stage_key = jax.random.fold_in(key, stage + 1)
            samples = self.sample(stage, rois, roi_valid, targets, stage_key)
            logits, deltas = box_heads[stage](pool(samples["rois"], 7))
            result = {"logits": logits, "deltas": deltas, "samples": samples}
            if o.stages > 1:  # the next stage's (and HTC's mask branch's) boxes
                rois = jax.vmap(decode_deltas, (0, 0, None, 0))(
                    samples["rois"], jax.lax.stop_gradient(deltas), o.stds(stage), image_sizes)
                roi_valid = samples["valid"] & ~samples["from_truth"]
            if mask_heads:
                mask_samples = (self.sample(stage, rois, roi_valid, targets,
                                            jax.random.fold_in(stage_key, 1))
                                if o.interleaved else samples)
                slots = positive_slots(o.rois, o.positive_fraction)  # the positives' slots
                mask_samples = {k: v[:, :slots] for k, v in mask_samples.items()}
                features = pool(mask_samples["rois"], 14)
                result["mask_logits"] = _mask_logits(mask_heads[:stage + 1], features,
                                                     o.mask_info_flow)
                result["mask_samples"] = mask_samples
            out["stages"].append(result)
        return out

    def sample(self, stage: int, rois, roi_valid, targets, key) -> dict[str, jnp.ndarray]:
        """A stage's training RoIs for every image (ground truth added, assigned at the
        stage's IoU, sampled)."""
        o = self.options
        sample = functools.partial(sample_rois, num_classes=self.num_classes,
                                   stds=o.stds(stage), iou=o.stage_ious[stage], count=o.rois,
                                   positive_fraction=o.positive_fraction)
        return jax.vmap(sample)(rois, roi_valid, targets["boxes"], targets["labels"],
                                targets["box_mask"], jax.random.split(key, rois.shape[0]))

    def detect(self, rois, roi_valid, image_sizes, pool, box_heads, mask_heads
               ) -> dict[str, jnp.ndarray]:
        """mmdet's cascade test: each stage scores the RoIs the previous one refined; the
        class logits are averaged over the stages, the boxes decoded from the last one."""
        o = self.options
        stage_logits = []
        for stage, head in enumerate(box_heads):
            logits, deltas = head(pool(rois, 7))
            stage_logits.append(logits)
            if stage < o.stages - 1:  # class-agnostic: the same box whatever the class
                rois = jax.vmap(decode_deltas, (0, 0, None, 0))(rois, deltas, o.stds(stage),
                                                               image_sizes)
        logits = sum(stage_logits) / len(stage_logits)
        detect = functools.partial(box_detections, stds=o.stds(o.stages - 1),
                                   score_threshold=self.score_threshold,
                                   iou_threshold=self.nms_threshold, keep=self.detections,
                                   pre_nms=self.pre_nms)
        found = jax.vmap(detect)(logits, deltas, rois, roi_valid, image_sizes)
        if mask_heads:
            features = pool(found["boxes"], 14)
            probabilities = [jax.nn.sigmoid(_mask_logits(mask_heads[:stage + 1], features,
                                                         o.mask_info_flow))
                             for stage in range(len(mask_heads))]
            mean = sum(probabilities) / len(probabilities)
            own = jnp.take_along_axis(mean, jnp.maximum(found["classes"], 0)[..., None, None, None],
                                      -1)
            found["masks"] = own[..., 0]
        return found


def _pool(levels: list[jnp.ndarray], semantic: jnp.ndarray | None, boxes: jnp.ndarray,
          size: int) -> jnp.ndarray:
    """RoI features (N, R, size, size, C) from the first four pyramid levels, plus HTC's
    semantic features pooled 14x14 from their single stride-8 map (averaged 2x2 for 7x7 box
    features, mmdet's adaptive average pooling)."""
    features = roi_align(levels, PYRAMID_STRIDES[:4], boxes, size)
    if semantic is None:
        return features
    extra = roi_align([semantic], (SEMANTIC_STRIDE,), boxes, 14,
                      levels=jnp.zeros(boxes.shape[:2], jnp.int32))
    if size != 14:
        n, r, _, _, c = extra.shape
        extra = extra.reshape(n, r, size, 14 // size, size, 14 // size, c).mean((3, 5))
    return features + extra


def _mask_logits(heads: list[Callable], features: jnp.ndarray, flow: bool) -> jnp.ndarray:
    """The last head's mask logits; with HTC's information flow each earlier head (run again
    on these RoIs) passes its features to the next."""
    previous = None
    if flow:
        for head in heads[:-1]:
            previous = head(features, previous, outputs="features")
    return heads[-1](features, previous)
