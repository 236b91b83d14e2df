"""The cascade family (Cascade R-CNN, Cascade Mask R-CNN, HTC): mmdet's weight names strictly
both ways, the rules transcribed from mmdet (stages' settings, refinement, score and mask
averaging, the semantic head), and a real train step of HTC on generated shapes."""

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
    from hrnet_jax.training import optim, step as step_lib
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


@pytest.fixture(scope="module")
def coco_with_stuff(shared_data, tmp_path_factory):
    """The COCO sample with COCO-stuff label maps beside it, made here: image 785's from its
    person masks (label 0, person; 150 elsewhere; a 255 band), image 40083's of the wrong size
    (to be named and stored unlabelled). Prepared into a fresh data_dir."""
    import cv2
    import json

    from hrnet_jax.data import prepare
    from hrnet_jax.data.detection import decode_masks, instance_rle

    root = tmp_path_factory.mktemp("coco_stuff")
    for part in ("annotations", "val2017"):
        (root / part).symlink_to(shared_data / "coco_mini" / part)
    folder = root / "stuffthingmaps" / "val2017"
    folder.mkdir(parents=True)
    truth = json.loads((shared_data / "coco_mini/annotations/person_keypoints_val2017.json")
                       .read_text())
    image = next(i for i in truth["images"] if i["id"] == 785)
    height, width = image["height"], image["width"]
    labels = np.full((height, width), 150, np.uint8)
    for annotation in truth["annotations"]:
        if annotation["image_id"] == 785:
            rle = instance_rle(annotation["segmentation"], height, width)
            labels[decode_masks([rle], height, width)[0] > 0] = 0
    labels[:5] = 255
    cv2.imwrite(str(folder / "000000000785.png"), labels)
    cv2.imwrite(str(folder / "000000040083.png"), np.zeros((10, 12), np.uint8))
    data_dir = tmp_path_factory.mktemp("tfds_stuff")
    with pytest.warns(UserWarning, match=r"000000040083\.png: 12x10 pixels"):
        prepare.prepare("coco_detection", str(root), str(data_dir))
    return data_dir, labels


def test_coco_stuff_maps_are_kept_beside_the_instances_and_bad_ones_named(coco_with_stuff):
    import tensorflow_datasets as tfds

    data_dir, labels = coco_with_stuff
    builder = tfds.builder("hrnet_coco_detection", data_dir=str(data_dir))
    assert builder.info.metadata["val"]["semantic_labels"] is True
    source = builder.as_data_source("val")
    by_id = {int(source[i]["image_id"]): source[i] for i in range(len(source))}
    np.testing.assert_array_equal(by_id[785]["semantic"][..., 0], labels)
    bad = by_id[40083]["semantic"]
    assert bad.shape[:2] == by_id[40083]["image"].shape[:2] and (bad == 255).all()


def test_htc_training_targets_come_from_the_maps_and_without_them_name_the_folder(
        coco_with_stuff, shared_data, tmp_path):
    """HTC's `semantic` target: the map resized with the image, padded with 255, at 1/8; a
    dataset prepared without stuffthingmaps/ is refused naming the folder to add."""
    from hrnet_jax.data import prepare
    from hrnet_jax.experiments import load
    from hrnet_jax.tasks import make_task
    import tensorflow_datasets as tfds

    data_dir, labels = coco_with_stuff
    config = load("det_coco_htc:w18,smoke")
    config.data.data_dir = str(data_dir)
    task = make_task(config)
    source = tfds.builder("hrnet_coco_detection", data_dir=str(data_dir)).as_data_source("val")
    record = next(source[i] for i in range(len(source)) if int(source[i]["image_id"]) == 785)
    example = task.prepare({**record, "short_side": 128})
    canvas = example["image"].shape[:2]
    assert example["semantic"].shape == (canvas[0] // 8, canvas[1] // 8)
    height, width = example["image_size"]
    inside = example["semantic"][:height // 8, :width // 8]
    assert set(np.unique(inside)) <= {0, 150, 255} and (inside == 0).any() and (inside == 150).any()
    assert (example["semantic"][-1] == 255).all() or height == canvas[0]  # the padding
    plain = tmp_path / "plain"
    prepare.prepare("coco_detection", str(shared_data / "coco_mini"), str(plain))
    record = tfds.builder("hrnet_coco_detection", data_dir=str(plain)).as_data_source("val")[0]
    with pytest.raises(ValueError, match=r"stuffthingmaps/train2017"):
        task.prepare({**record, "short_side": 128})


def test_a_stuff_map_with_labels_outside_the_183_classes_is_named(tmp_path):
    import cv2

    from hrnet_jax.data.builders.coco_detection import semantic_map

    labels = np.zeros((6, 8), np.uint8)
    labels[2, 3], labels[0, 0] = 200, 255  # 200: no class; 255: unlabelled, fine
    cv2.imwrite(str(tmp_path / "000000000001.png"), labels)
    image = {"file_name": "000000000001.jpg", "height": 6, "width": 8}
    with pytest.warns(UserWarning, match=r"000000000001\.png: labels \[200\] outside"):
        stored = semantic_map(str(tmp_path), image)
    assert stored.shape == (6, 8, 1) and (stored == 255).all()
    labels[2, 3] = 182
    cv2.imwrite(str(tmp_path / "000000000001.png"), labels)
    np.testing.assert_array_equal(semantic_map(str(tmp_path), image)[..., 0], labels)


def test_stage_losses_are_weighted_and_named_by_stage():
    """The task's loss: the RPN's, plus each stage's box (and mask) losses times the stage's
    weight, plus HTC's semantic loss times its weight; each figure named by its stage."""
    from hrnet_jax.experiments import load
    from hrnet_jax.tasks import make_task, rcnn

    config = load("inst_synthetic:htc")
    task = make_task(config)
    rng = np.random.default_rng(0)
    n, r, p, k = 1, 8, 2, 4
    samples = {"labels": jnp.asarray(rng.integers(0, k + 1, (n, r))),
               "deltas": jnp.asarray(rng.normal(size=(n, r, 4)), jnp.float32),
               "positive": jnp.asarray(rng.uniform(size=(n, r)) < 0.5),
               "valid": jnp.ones((n, r), bool), "matched": jnp.zeros((n, r), jnp.int32),
               "rois": jnp.asarray([[[0.0, 0, 10, 10]] * r])}
    stages = [{"logits": jnp.asarray(rng.normal(size=(n, r, k + 1)), jnp.float32),
               "deltas": jnp.asarray(rng.normal(size=(n, r, 4)), jnp.float32),
               "samples": samples,
               "mask_logits": jnp.asarray(rng.normal(size=(n, p, 28, 28, k)), jnp.float32),
               "mask_samples": {key: v[:, :p] for key, v in samples.items()}}
              for _ in range(3)]
    outputs = {"rpn_objectness": jnp.zeros((n, 3)), "rpn_deltas": jnp.zeros((n, 3, 4)),
               "anchors": jnp.asarray([[0.0, 0, 8, 8], [4, 4, 12, 12], [20, 20, 40, 40]]),
               "rpn_key": jax.random.key(0), "stages": stages,
               "semantic_logits": jnp.asarray(rng.normal(size=(n, 2, 2, 5)), jnp.float32)}
    batch = {"boxes": jnp.asarray([[[0.0, 0, 10, 10]]]), "labels": jnp.asarray([[1]]),
             "box_mask": jnp.ones((1, 1)), "box_masks": jnp.ones((1, 1, 56, 56)),
             "semantic": jnp.asarray([[[0, 1], [255, 4]]])}
    total, figures = task.loss(outputs, batch)
    expected = figures["loss_rpn_cls"] + figures["loss_rpn_box"]
    for index, weight in enumerate((1.0, 0.5, 0.25)):
        parts = [figures[f"loss_{name}_s{index}"] for name in ("rcnn_cls", "rcnn_box", "mask")]
        expected = expected + weight * sum(parts)
    semantic = rcnn.semantic_loss(outputs["semantic_logits"], batch["semantic"])
    log_p = jax.nn.log_softmax(outputs["semantic_logits"][0])
    by_hand = -(log_p[0, 0, 0] + log_p[0, 1, 1] + log_p[1, 1, 4]) / 3  # 255 ignored
    np.testing.assert_allclose(semantic, by_hand, rtol=1e-6)
    np.testing.assert_allclose(figures["loss_semantic"], semantic, rtol=1e-6)
    np.testing.assert_allclose(total, expected + 0.2 * semantic, rtol=1e-5)
    # smooth L1 (the cascades' box loss): quadratic below beta, linear above
    np.testing.assert_allclose(rcnn.smooth_l1(jnp.asarray([0.5, -2.0]), 1.0), [0.125, 1.5])
    np.testing.assert_allclose(rcnn.smooth_l1(jnp.asarray([0.5, -2.0]), 0.0), [0.5, 2.0])


def test_exported_two_stage_detector_takes_each_images_size_and_clips_to_it():
    """The served artifact of a two-stage detector takes (images, image_sizes) and returns what
    the model returns, boxes inside each image's own size; any batch size. (Faster R-CNN: the
    cascades detect through the same code, checked above.)"""
    from hrnet_jax import surgery

    model = create_model(tiny_arch(4), "faster_rcnn", 3, detector=dict(SMALL, proposals=20),
                         inference=dict(score_threshold=0.0, nms_threshold=0.5, detections=10,
                                        pre_nms=60))
    images = jnp.asarray(np.random.default_rng(4).normal(size=(2, 64, 64, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), images[:1])
    exported = surgery.export_inference(model, variables, (64, 64))
    restored = surgery.load_exported(exported.serialize())
    sizes = jnp.array([[64, 40], [24, 64]], jnp.int32)
    served = restored.call(images, sizes)
    direct = model.apply(variables, images, image_sizes=sizes)
    np.testing.assert_allclose(served["boxes"], direct["boxes"], atol=1e-4)
    boxes = np.asarray(served["boxes"])
    assert boxes[0, :, 2].max() <= 40 + 1e-4 and boxes[1, :, 3].max() <= 24 + 1e-4
    assert boxes[0, :, 2].max() > 30  # the box regressions reach the clipped edge


