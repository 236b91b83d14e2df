"""The detection task (hrnet_jax/tasks/detection.py): smoke runs of FCOS and the R-CNNs on the
real sample reporting AP, the stage losses, targets that decode back to the truth, and the
pictures (captioned boxes, translucent masks pasted in the image's pixels)."""

from __future__ import annotations

import json

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.data import detection, pipeline
from hrnet_jax.data.datasets import coco as coco_categories
from hrnet_jax.detection import sampler
from hrnet_jax.experiments import load
from hrnet_jax.metrics import coco
from hrnet_jax.tasks import make_task

from conftest import coco_detection_records


@pytest.fixture(scope="module")
def smoke_run(coco_detection_data, tmp_path_factory):
    from hrnet_jax import main

    workdir = tmp_path_factory.mktemp("detection")
    args = ["--experiment=det_coco_fcos:w18,smoke", f"--workdir={workdir}",
            f"--set=data.data_dir={coco_detection_data}"]
    assert main.main(args) == 0
    return workdir, args


def test_smoke_trains_the_three_losses_and_reports_box_ap(smoke_run):
    workdir, _ = smoke_run
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["split"] == "train"]
    assert [l["step"] for l in train] == [2, 4]
    for line in train:
        assert all(np.isfinite(line[k]) and line[k] > 0 for k in ("loss_cls", "loss_box", "loss_centerness"))
        assert line["loss"] == pytest.approx(line["loss_cls"] + line["loss_box"] + line["loss_centerness"], rel=1e-5)
    # the second step's lr, halfway through the 2-step warmup from 0.01 / 3 to 0.01
    assert train[0]["lr"] == pytest.approx(0.01 * (1 / 3 + 0.5 * 2 / 3))
    evaluation = [l for l in lines if l["split"] == "eval"][-1]
    assert set(coco.BOX_STATS) <= set(evaluation) and "detections" in evaluation
    picture = cv2.imread(str(next((workdir / "pictures").glob("*.png"))))
    assert picture.shape == (22 + 425, 3 * 640 + 2 * 4, 3)  # input | detections | ground truth
    green = (picture[..., 1] > 200) & (picture[..., 0] < 80) & (picture[..., 2] < 80)
    truth = slice(2 * (640 + 4), None)  # the third panel; the input and detections have none
    assert green[22:, truth].sum() > 500 and green[22:, :2 * 640].sum() == 0


def test_predict_prints_and_draws_captioned_boxes(smoke_run, shared_data, tmp_path, capsys,
                                                  monkeypatch):
    from hrnet_jax import main
    from hrnet_jax.tasks import detection as detection_task
    from hrnet_jax.tasks.detection import PREDICTION_COLOUR, draw_boxes

    workdir, args = smoke_run
    image = shared_data / "coco_mini/val2017/000000040083.jpg"
    monkeypatch.setattr(detection_task, "DRAW_SCORE", 0.0)  # the smoke model's every detection
    assert main.main(args + [f"--set=data.data_dir={tmp_path}/nowhere", "--mode=predict",
                             f"--input={image}", f"--output={tmp_path}/out"]) == 0
    assert cv2.imread(str(tmp_path / "out/000000040083_detections.png")).shape == (333, 500, 3)
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if "detections scoring at least 0.0" in line)
    found = printed[header + 1:header + 1 + int(printed[header].split()[0])]
    assert found, printed  # class name, score, box in the image's pixels
    for line in found:
        name, score, *box = line.rsplit(" ", 5)
        assert name in coco_categories.NAMES and 0 <= float(score) <= 1 and len(box) == 4
        x0, y0, x1, y1 = map(float, box)
        assert 0 <= x0 <= x1 <= 500 and 0 <= y0 <= y1 <= 333
    # The same detections from Python, at the image's size.
    import hrnet_jax
    from hrnet_jax.predict import read_image

    result = hrnet_jax.Predictor.from_workdir(str(workdir))(read_image(str(image)))[0]
    assert len(result["boxes"]) == len(found) and result["boxes"].shape[1:] == (4,)
    assert (result["boxes"] >= 0).all() and (result["boxes"][:, [0, 2]] <= 500).all()
    assert np.all(np.diff(result["scores"]) <= 0)  # best first
    blank = np.zeros((100, 300, 3), np.uint8)
    drawn = draw_boxes(blank, np.array([[20, 30, 120, 90]]), np.array([17]), np.array([0.87]),
                       PREDICTION_COLOUR, coco_categories.NAMES)
    assert (drawn[60, 20] == PREDICTION_COLOUR).all() and (drawn[60, 70] == 0).all()
    caption = drawn[:30, 20:120]  # "cat 0.87" on a filled label above the box
    assert (caption == PREDICTION_COLOUR).all(-1).sum() > 200 and (caption == 0).all(-1).sum() > 20
    small = draw_boxes(np.zeros((64, 64, 3), np.uint8), np.array([[8, 2, 40, 30]]), np.array([1]),
                       None, PREDICTION_COLOUR, ("disc", "square"))
    assert small.shape == (256, 256, 3) and (small[60, 32] == PREDICTION_COLOUR).all()
    below = small[121:140, 33:150]  # no room above the box: "square" under its bottom edge
    assert (below == PREDICTION_COLOUR).all(-1).sum() > 200


def test_instance_masks_are_drawn_translucent_in_shades_of_the_colour():
    from hrnet_jax.tasks.detection import MASK_OPACITY, PREDICTION_COLOUR, overlay_masks

    image = np.full((20, 30, 3), 100, np.uint8)
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:8, 2:8], masks[1, 10:15, 20:25] = True, True
    drawn = overlay_masks(image, masks, PREDICTION_COLOUR)
    expected = (1 - MASK_OPACITY) * 100 + MASK_OPACITY * np.asarray(PREDICTION_COLOUR)
    np.testing.assert_allclose(drawn[4, 4], expected, atol=0.5)
    assert (drawn[12, 22] != drawn[4, 4]).any() and (drawn[12, 22] > 0).all()  # another shade
    assert (drawn[~masks.any(0)] == 100).all() and (image == 100).all()  # the rest untouched


def test_mask_rcnn_pictures_paste_each_mask_into_its_box_in_the_images_pixels():
    """What `--mode=predict` draws for Mask R-CNN, from the device's outputs (faked here: one
    detection with a 28x28 mask filling its left half): the box mapped back to the image's
    pixels, the mask pasted inside it, translucent, the rest of the picture untouched."""
    from hrnet_jax.tasks.detection import PREDICTION_COLOUR

    config = load("inst_synthetic:smoke")
    task = make_task(config)
    image = np.full((32, 32, 3), 100, np.uint8)  # resized x2 onto the 64x64 canvas
    half = np.zeros((1, 1, 28, 28), np.float32)
    half[..., :14] = 0.9

    def predict(images, image_sizes=None):
        assert images.shape == (1, 64, 64, 3)
        return {"boxes": np.array([[[16, 8, 48, 40]]], np.float32), "scores": np.array([[0.8]]),
                "classes": np.array([[2]]), "valid": np.array([[True]]), "masks": half}

    found = task.detect(predict, image)
    np.testing.assert_allclose(found["boxes"], [[8, 4, 24, 20]])
    assert found["masks"].shape == (1, 32, 32)
    assert found["masks"][0, 4:20, 8:16].all() and not found["masks"][0, :, 16:].any()
    picture = task.predicted_picture(predict, image)  # enlarged x8 for the captions
    assert picture.shape == (256, 256, 3)
    tinted = picture[12 * 8, 12 * 8]  # inside the mask: half-way to the colour
    np.testing.assert_allclose(tinted, 0.5 * 100 + 0.5 * np.asarray(PREDICTION_COLOUR), atol=1)
    assert (picture[12 * 8, 20 * 8] == 100).all() and (picture[28 * 8, 28 * 8] == 100).all()


def test_mask_rcnn_train_step_learns_a_batch_and_inference_masks_its_detections():
    """The real train step of Mask R-CNN (Faster R-CNN plus the mask head: one code path) on
    generated shapes with their masks (Task.model_inputs hands the boxes to the forward, which
    samples its RoIs): every part of the model gets gradients, a few steps lower both stages'
    classification losses and the mask loss. Inference returns the detections with one 28x28
    mask probability map each."""
    from hrnet_jax.training import optim
    from hrnet_jax.training import step as step_lib
    from hrnet_jax.training.loop import build_model

    config = load("inst_synthetic:smoke")
    config.optim.optimizer, config.optim.learning_rate, config.optim.warmup_steps = "sgd", 0.002, 0
    config.eval.max_detections, config.eval.score_threshold = 20, 0.0  # any detections
    task, model = make_task(config), build_model(config)
    source, _ = task.dataset.sources(config.data)
    batch = next(iter(pipeline.train_loader(source, task.prepare, 2, 0)))
    assert batch["box_masks"].shape == (2, 4, 56, 56) and batch["box_masks"].max() == 1.0
    tx = optim.make_optimizer(config.optim, 100)
    state = jax.jit(lambda: step_lib.init_state(model, tx, (64, 64, 3), 0))()
    train_step = jax.jit(step_lib.make_train_step(model, tx, task))
    figures = []
    for _ in range(4):
        before = state["params"]
        state, logged = train_step(state, batch)
        figures.append(jax.device_get(logged))
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         before, state["params"])
    assert max(jax.tree.leaves(moved["backbone"])) > 0
    for part in ("neck", "rpn", "box_head", "mask_head"):
        assert min(jax.tree.leaves(moved["head"][part])) > 0, part
    for key in ("loss_rpn_cls", "loss_rcnn_cls", "loss_mask"):
        assert figures[-1][key] < figures[0][key], (key, [f[key] for f in figures])
    predict = jax.jit(step_lib.make_predict(model, task.postprocess))
    found = jax.device_get(predict(state, batch["image"]))
    assert found["boxes"].shape == (2, 20, 4) and found["masks"].shape == (2, 20, 28, 28)
    assert 0 <= found["masks"].min() and found["masks"].max() <= 1
    assert found["valid"].any() and (found["classes"][found["valid"]] >= 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["det_coco_rcnn:faster_rcnn,w18", "det_coco_rcnn:mask_rcnn,w18"])
def test_rcnn_smoke_trains_both_stages_and_reports_ap(coco_detection_data, tmp_path, experiment):
    """The R-CNNs' smokes on the real sample: the RPN's and the R-CNN's losses (and Mask R-CNN's
    mask loss on the sample's real outlines), mmdet's warmup from 0.02 x 0.001, COCO box (and
    mask) AP from the detections, pictures with masks."""
    from hrnet_jax import main

    assert main.main([f"--experiment={experiment},smoke", f"--workdir={tmp_path}",
                      f"--set=data.data_dir={coco_detection_data}", "--set=loop.num_steps=2"]) == 0
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    [train] = [l for l in lines if l["split"] == "train"]
    masks = "mask_rcnn" in experiment
    parts = ("loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box") + (
        ("loss_mask",) if masks else ())
    assert all(np.isfinite(train[k]) and train[k] > 0 for k in parts)
    assert train["loss"] == pytest.approx(sum(train[k] for k in parts), rel=1e-5)
    # step 2's lr, halfway through the 2-step warmup from 0.02 x 0.001 to 0.02
    assert train["lr"] == pytest.approx(0.02 * (0.001 + 0.5 * 0.999))
    evaluation = [l for l in lines if l["split"] == "eval"][-1]
    # (2 steps from the initialisation: 81-way softmax scores near 1/81 stay under 0.05)
    assert set(coco.BOX_STATS) <= set(evaluation) and "detections" in evaluation
    assert masks == ({f"mask_{k}" for k in coco.BOX_STATS} <= set(evaluation))
    assert len(list((tmp_path / "pictures").glob("*.png"))) == 1


def test_rcnn_targets_of_the_real_sample_decode_back_to_the_truth(coco_detection_data):
    """The R-CNN training path on the sample's real boxes and outlines: `prepare` (boxes and
    box-relative masks of the boxes that train), `sample_rois` on proposals jittered around
    them, its positives' box targets decoded back onto their RoIs: their ground truth; the device's
    28x28 mask targets of RoIs equal to the boxes, pasted back into each image as evaluation
    does: every instance keeps IoU >= 0.8 with its true mask (the 28x28 grid's loss), and as
    detections they score mask AP50 1.0."""
    import jax.numpy as jnp

    from hrnet_jax.detection.coder import decode_deltas
    from hrnet_jax.detection.mask_targets import mask_targets

    STDS = (0.1, 0.1, 0.2, 0.2)  # Faster R-CNN's coder

    config = load("det_coco_rcnn:mask_rcnn,w18,smoke")
    config.data.data_dir = str(coco_detection_data)
    task = make_task(config)
    source = coco_detection_records(coco_detection_data)
    images, truth_rows, result_rows = [], [], []
    for index in range(len(source)):
        record = dict(source[index])
        objects = detection.object_arrays(record)
        height, width = record["image"].shape[:2]
        image_id = int(record["image_id"])
        images.append({"id": image_id, "height": height, "width": width})
        ids = np.asarray(coco_categories.CATEGORY_IDS)[objects["label"]]
        truth_rows.append({"image_id": np.full(len(ids), image_id), "bbox": objects["bbox"],
                           "category_id": ids, "area": objects["area"],
                           "iscrowd": objects["iscrowd"], "mask": objects["mask"]})
        example = task.prepare(record)
        count = int(example["box_mask"].sum())
        assert count == int((objects["iscrowd"] == 0).sum()) > 0
        boxes = example["boxes"][:count]
        targets = np.asarray(mask_targets(boxes, boxes, example["box_masks"][:count],
                                               np.arange(count)))
        scale = detection.resize_scale(height, width, task.eval_short_side,
                                       config.data.max_long_side)
        pasted = coco.paste_masks(targets, boxes / scale, height, width)
        jitter = np.random.default_rng(index).uniform(-0.1, 0.1, (20, count, 4))
        sides = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        proposals = (boxes[None] + jitter * sides[None]).reshape(-1, 4)
        samples = sampler.sample_rois(jnp.asarray(proposals), jnp.ones(len(proposals)),
                                      jnp.asarray(example["boxes"]),
                                      jnp.asarray(example["labels"]),
                                      jnp.asarray(example["box_mask"]), jax.random.key(index), 1,
                                      STDS, count=64)
        positive = np.asarray(samples["positive"])
        assert positive.sum() == 16  # the quota: a quarter of 64
        decoded = np.asarray(decode_deltas(samples["rois"], samples["deltas"], STDS))
        np.testing.assert_allclose(decoded[positive], boxes[np.asarray(samples["matched"])[positive]],
                                   atol=1e-3)
        full = detection.decode_masks(objects["mask"][objects["iscrowd"] == 0], height, width) > 0
        for truth_mask, mask in zip(full, pasted):
            assert (truth_mask & mask).sum() / (truth_mask | mask).sum() >= 0.8
        result_rows.append({"image_id": np.full(count, image_id), "mask": coco.encode_masks(pasted),
                            "size": np.tile([height, width], (count, 1)),
                            "category_id": ids[objects["iscrowd"] == 0]})
    truth = coco.box_ground_truth(
        images, {k: np.concatenate([r[k] for r in truth_rows]) for k in truth_rows[0]},
        coco_categories.CATEGORIES)
    results = coco.mask_results(np.concatenate([r["image_id"] for r in result_rows]),
                                [m for r in result_rows for m in r["mask"]],
                                np.concatenate([r["size"] for r in result_rows]),
                                np.ones(sum(len(r["mask"]) for r in result_rows)),
                                np.concatenate([r["category_id"] for r in result_rows]))
    assert coco.mask_ap(truth, results)["ap50"] == pytest.approx(1.0)


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
