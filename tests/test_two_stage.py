"""The two-stage detectors (hrnet_jax/models/two_stage.py, detectors.py), the cascades above
all: the stages' settings as mmdet's, score and mask averaging at test, HTC's interleaving, and
a real train step of HTC on generated shapes. (Their weights: test_weights; their pieces:
test_sampler, test_roi_align, test_rcnn_heads, ...)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.detection import coder, sampler
from hrnet_jax.models import create_model, tiny_arch
from hrnet_jax.models.detectors import DETECTORS

SMALL = dict(channels=32, proposals=40, train_pre_nms=40, train_proposals=40, rois=32)


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
    variables = jax.jit(model.init)(jax.random.key(0), x)
    sizes = jnp.array([[64, 56]])
    found, captured = jax.jit(lambda v: model.apply(v, x, image_sizes=sizes,  # (eager: slow)
                                                    capture_intermediates=True,
                                                    mutable=["intermediates"]))(variables)
    captured = captured["intermediates"]["head"]
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
    expected = jax.jit(jax.vmap(lambda *a: box_detections(*a, stds=stds, score_threshold=0.0,
                                                          iou_threshold=0.5, keep=10,
                                                          pre_nms=100)))(
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


@pytest.mark.parametrize("head", [pytest.param("cascade_rcnn", marks=pytest.mark.slow),
                                  pytest.param("cascade_mask_rcnn", marks=pytest.mark.slow),
                                  "htc"])
def test_cascade_train_step_learns_a_batch_and_inference_has_static_shapes(head):
    """The real train step of each framework on generated shapes (HTC with the generator's
    scene classes as semantic labels): every part of the model gets gradients, ten steps
    lower every stage's classification (and mask) loss and the semantic loss; inference
    returns the detections in static shapes."""
    from hrnet_jax.data import pipeline
    from hrnet_jax.experiments import load
    from hrnet_jax.tasks import make_task
    from hrnet_jax.training import optim
    from hrnet_jax.training import step as step_lib
    from hrnet_jax.training.loop import build_model

    config = load(f"inst_synthetic:{head}")
    config.model.arch, config.model.width = "tiny", 4
    config.optim.learning_rate, config.optim.warmup_steps = 1e-3, 0  # the demo's Adam
    config.eval.max_detections, config.eval.score_threshold = 20, 0.0
    # Every stage at full weight, so that ten steps move the last stage's heads as far as the
    # first's (the weights' effect on the loss is checked by known answers below).
    config.model.detector.stage_weights = (1.0, 1.0, 1.0)
    task, model = make_task(config), build_model(config)
    source, _ = task.dataset.sources(config.data)
    batch = next(iter(pipeline.train_loader(source, task.prepare, 2, 0)))
    if head == "htc":
        assert batch["semantic"].shape == (2, 8, 8) and set(np.unique(batch["semantic"])) <= {
            0, 1, 2, 3, 4, 255}
        assert batch["semantic"].max() > 0  # the shapes are labelled
    tx = optim.make_optimizer(config.optim, 100)
    state = jax.jit(lambda: step_lib.init_state(model, tx, (64, 64, 3), 0))()
    train_step = jax.jit(step_lib.make_train_step(model, tx, task))
    figures = []
    first = state["params"]
    for _ in range(10):  # the later stages' samples change as the earlier stages learn
        state, logged = train_step(state, batch)
        figures.append(jax.device_get(logged))
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         first, state["params"])
    parts = ["neck", "rpn", *[f"box_head{i}" for i in range(3)]]
    if DETECTORS[head].masks:
        parts += [f"mask_head{i}" for i in range(3)]
    if head == "htc":
        parts.append("semantic_head")
    assert sorted(moved["head"]) == sorted(parts)
    for part in parts:
        assert max(jax.tree.leaves(moved["head"][part])) > 0, part
    assert max(jax.tree.leaves(moved["backbone"])) > 0
    losses = ["loss_rpn_cls", *[f"loss_rcnn_cls_s{i}" for i in range(3)]]
    if DETECTORS[head].masks:
        losses += [f"loss_mask_s{i}" for i in range(3)]
    if head == "htc":
        losses.append("loss_semantic")
    for key in losses:  # the last steps' mean below the first step's
        assert np.mean([f[key] for f in figures[-3:]]) < figures[0][key], (
            key, [float(f[key]) for f in figures])
    predict = jax.jit(step_lib.make_predict(model))
    found = predict(state, batch["image"], batch["image_size"])
    assert found["boxes"].shape == (2, 20, 4) and found["valid"].shape == (2, 20)
    if DETECTORS[head].masks:
        assert found["masks"].shape == (2, 20, 28, 28)
    sizes = np.asarray(batch["image_size"])
    assert (np.asarray(found["boxes"])[..., 2] <= sizes[:, 1:2] + 1e-3).all()
    assert (np.asarray(found["boxes"])[..., 3] <= sizes[:, :1] + 1e-3).all()


@pytest.mark.slow  # two cascades' training forward, eagerly: the fast tier trains HTC above
def test_htc_interleaves_and_cascade_mask_rcnn_does_not():
    """HTC's mask branch of stage i trains on RoIs drawn anew from the boxes stage i refined
    (the ground truth added again); Cascade Mask R-CNN's on the positives its box branch drew.
    Each stage's box samples after the first come from the previous stage's refined boxes."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 64, 64, 3)), jnp.float32)
    targets = {"boxes": jnp.array([[[6.0, 8, 40, 44], [30, 20, 60, 50]]]),
               "labels": jnp.array([[1, 2]]), "box_mask": jnp.ones((1, 2))}
    sizes = jnp.array([[64, 64]])
    for head, interleaved in (("htc", True), ("cascade_mask_rcnn", False)):
        options = dict(SMALL, semantic_classes=3) if head == "htc" else SMALL
        model = create_model(tiny_arch(4), head, 3, detector=options)
        variables = model.init(jax.random.key(0), x)
        out, _ = model.apply(variables, x, train=True, targets=targets, image_sizes=sizes,
                             rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])
        slots = sampler.positive_slots(SMALL["rois"], 0.25)
        previous = None
        for index, stage in enumerate(out["stages"]):
            samples, masks = stage["samples"], stage["mask_samples"]
            refined = np.asarray(coder.decode_deltas(samples["rois"], stage["deltas"],
                                                     model.detector.stds(index), (64, 64)))[0]
            kept = np.asarray(samples["valid"] & ~samples["from_truth"])[0]
            allowed = {tuple(np.round(b, 3)) for b in refined[kept]} | {
                tuple(np.round(b, 3)) for b in np.asarray(targets["boxes"])[0]}
            drawn = {tuple(np.round(b, 3)) for b in
                     np.asarray(masks["rois"])[0][np.asarray(masks["valid"])[0]]}
            if interleaved:
                assert drawn <= allowed
            else:
                np.testing.assert_array_equal(masks["rois"], samples["rois"][:, :slots])
            if previous is not None:  # this stage's boxes: the previous stage's refined ones
                box_rois = {tuple(np.round(b, 3)) for b in
                            np.asarray(samples["rois"])[0][np.asarray(samples["valid"])[0]]}
                assert box_rois <= previous
            previous = allowed


