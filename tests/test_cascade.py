"""The cascade family (Cascade R-CNN, Cascade Mask R-CNN, HTC): mmdet's weight names strictly
both ways, the rules transcribed from mmdet (stages' settings, refinement, score and mask
averaging, the semantic head), and a real train step of HTC on generated shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax import weights
from hrnet_jax.detection import coder, sampler
from hrnet_jax.detection.boxes import iou_matrix
from hrnet_jax.models import create_model, tiny_arch
from hrnet_jax.models.detectors import DETECTORS

SMALL = dict(channels=32, proposals=40, train_pre_nms=40, train_proposals=40, rois=32)


def random_variables(model, seed=0):
    rng = np.random.default_rng(seed)  # shapes traced only (nothing compiled), values random
    return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                        weights.abstract_variables(model))


@pytest.mark.parametrize("head", ["cascade_rcnn", "cascade_mask_rcnn", "htc"])
def test_cascade_weights_in_mmdets_layout_round_trip_strictly(head):
    """roi_head.bbox_head.{i}, roi_head.mask_head.{i} (HTC's conv_res from the second stage),
    roi_head.semantic_head.*: strict both ways; a checkpoint missing a stage names it."""
    from test_weights import assert_state_dicts_equal

    model = create_model(tiny_arch(4), head, 3, detector=dict(SMALL, semantic_classes=7)
                         if head == "htc" else SMALL)
    state_dict = weights.to_torch(random_variables(model), head)
    for stage in range(3):
        assert state_dict[f"roi_head.bbox_head.{stage}.fc_reg.weight"].shape == (4, 1024)
        assert state_dict[f"roi_head.bbox_head.{stage}.fc_cls.weight"].shape == (4, 1024)
        if DETECTORS[head].masks:
            assert state_dict[f"roi_head.mask_head.{stage}.convs.3.conv.weight"].shape == (
                32, 32, 3, 3)
    residual = {k for k in state_dict if "conv_res" in k}
    if head == "htc":
        assert residual == {f"roi_head.mask_head.{i}.conv_res.conv.{p}" for i in (1, 2)
                            for p in ("weight", "bias")}
        assert state_dict["roi_head.semantic_head.conv_logits.weight"].shape == (7, 32, 1, 1)
        assert state_dict["roi_head.semantic_head.lateral_convs.4.conv.weight"].shape == (
            32, 32, 1, 1)
        assert "roi_head.semantic_head.conv_embedding.conv.weight" in state_dict
    else:
        assert not residual
    loaded = weights.from_torch(model, state_dict)
    assert_state_dicts_equal(weights.to_torch(loaded, head), state_dict)
    assert weights.convert(tiny_arch(4), head, state_dict,
                           detector=model.detector.__dict__)["params"]["head"].keys() == \
        loaded["params"]["head"].keys()  # the classes read from stage 0's fc_cls
    without = {k: v for k, v in state_dict.items() if not k.startswith("roi_head.bbox_head.2.")}
    with pytest.raises(weights.WeightLoadError, match=r"missing whole cascade stage\(s\): "
                                                      r"roi_head\.bbox_head\.2"):
        weights.from_torch(model, without)


def test_descriptions_hold_mmdets_cascade_settings():
    cascade = DETECTORS["cascade_rcnn"].default_options()
    assert cascade.stage_ious == (0.5, 0.6, 0.7) and cascade.stage_weights == (1.0, 0.5, 0.25)
    assert [cascade.stds(i) for i in range(3)] == [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1),
                                                   (0.033, 0.033, 0.067, 0.067)]
    assert cascade.class_agnostic and cascade.box_beta == 1.0 and cascade.rpn_beta == 1 / 9
    htc = DETECTORS["htc"].default_options()
    assert htc.interleaved and htc.mask_info_flow and htc.semantic_classes == 183
    assert not DETECTORS["cascade_mask_rcnn"].default_options().interleaved
    faster = DETECTORS["faster_rcnn"].default_options()
    assert faster.stages == 1 and faster.box_beta == 0 and not faster.class_agnostic
    with pytest.raises(ValueError, match="class_agnostic"):
        create_model(tiny_arch(4), "cascade_rcnn", 3, detector=dict(class_agnostic=False))
    with pytest.raises(ValueError, match="one IoU and one weight a stage"):
        create_model(tiny_arch(4), "cascade_rcnn", 3, detector=dict(stage_weights=(1.0,)))
    with pytest.raises(ValueError, match="no option"):
        create_model(tiny_arch(4), "cascade_rcnn", 3, detector=dict(strides=(4, 8)))


def test_stage_sampling_marks_the_ground_truth_and_refinement_drops_it():
    """mmdet's refine_bboxes: every sampled RoI decoded with the stage's stds (class-agnostic,
    clipped to the image), the ground truth added as proposals dropped; the next stage assigns
    the refined boxes at its own IoU."""
    truth = np.array([[10, 10, 50, 40], [60, 20, 90, 80]], np.float32)
    labels, mask = np.array([1, 0]), np.ones(2, np.float32)
    rng = np.random.default_rng(3)
    proposals = (truth[rng.integers(0, 2, 30)] + rng.normal(0, 4, (30, 4))).astype(np.float32)
    stds = (0.05, 0.05, 0.1, 0.1)
    out = sampler.sample_rois(proposals, np.ones(30, np.float32), truth, labels, mask,
                              jax.random.key(0), 2, stds, iou=0.6, count=16)
    from_truth = np.asarray(out["from_truth"])
    rois = np.asarray(out["rois"])
    assert from_truth.sum() == 2  # both ground truths were sampled (IoU 1: positives)
    np.testing.assert_allclose(rois[from_truth], truth[np.asarray(out["matched"])[from_truth]])
    # The targets decode back to the matched truth with the stage's stds.
    positive = np.asarray(out["positive"])
    decoded = np.asarray(coder.decode_deltas(rois, out["deltas"], stds))
    np.testing.assert_allclose(decoded[positive], truth[np.asarray(out["matched"])[positive]],
                               atol=1e-3)
    ious = np.asarray(iou_matrix(jnp.asarray(rois), jnp.asarray(truth))).max(1)
    valid = np.asarray(out["valid"])
    assert (ious[positive] >= 0.6).all() and (ious[valid & ~positive] < 0.6).all()


@pytest.mark.slow  # compiles a whole cascade: the fast tier has its weights and rules
def test_cascade_inference_averages_the_stages_logits_and_masks():
    """mmdet's cascade test: the RoIs refined stage by stage; the class logits averaged over
    the stages (then softmax), the boxes from the last stage; with masks, the three heads'
    probabilities averaged on the final boxes. Checked by running the stages by hand."""
    from hrnet_jax.detection.decode import box_detections

    model = create_model(tiny_arch(4), "cascade_mask_rcnn", 3,
                         inference=dict(score_threshold=0.0, nms_threshold=0.5, detections=10,
                                        pre_nms=100), detector=SMALL)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 64, 64, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    sizes = jnp.array([[64, 56]])
    found = model.apply(variables, x, image_sizes=sizes)
    captured = model.apply(variables, x, image_sizes=sizes, capture_intermediates=True,
                           mutable=["intermediates"])[1]["intermediates"]["head"]
    rois = captured["rpn"]["__call__"][0]["proposals"]
    valid = captured["rpn"]["__call__"][0]["proposal_valid"]
    logits_sum = 0
    for stage in range(3):
        logits, deltas = captured[f"box_head{stage}"]["__call__"][0]
        logits_sum = logits_sum + logits
        stds = model.detector.stds(stage)
        if stage < 2:
            rois = jax.vmap(coder.decode_deltas, (0, 0, None, 0))(rois, deltas, stds,
                                                                  sizes.astype(jnp.float32))
    expected = jax.vmap(lambda *a: box_detections(*a, stds=stds, score_threshold=0.0,
                                                  iou_threshold=0.5, keep=10, pre_nms=100))(
        logits_sum / 3, deltas, rois, valid, sizes.astype(jnp.float32))
    np.testing.assert_allclose(found["boxes"], expected["boxes"], atol=1e-4)
    np.testing.assert_allclose(found["scores"], expected["scores"], atol=1e-6)
    heads = [captured[f"mask_head{stage}"] for stage in range(3)]
    assert all(len(h["__call__"]) == 1 for h in heads)
    probabilities = sum(jax.nn.sigmoid(h["__call__"][0]) for h in heads) / 3
    own = np.take_along_axis(np.asarray(probabilities),
                             np.maximum(np.asarray(found["classes"]), 0)[..., None, None, None],
                             -1)[..., 0]
    np.testing.assert_allclose(found["masks"], own, atol=1e-6)
