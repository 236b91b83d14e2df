"""Detection: COCO box preparation, resizing into size buckets, orientation-grouped batches,
box AP known answers on the real sample, the FCOS model and a smoke run with pictures."""

from __future__ import annotations

import json
import shutil

import cv2
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import perfect_head_outputs
from hrnet_jax.data import detection, pipeline, prepare
from hrnet_jax.data.datasets import coco as coco_categories
from hrnet_jax.metrics import coco
from hrnet_jax.experiments import load
from hrnet_jax.tasks import make_task


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare.prepare("coco_detection", str(shared_data / "coco_mini"), str(data_dir))
    return data_dir


def records(prepared):
    return tfds.builder("hrnet_coco_detection", data_dir=str(prepared)).as_data_source("val")


def smoke_config(prepared):
    config = load("det_coco_fcos:w18,smoke")
    config.data.data_dir = str(prepared)
    return config


def test_records_hold_every_box_with_its_contiguous_label(prepared, shared_data):
    with open(shared_data / "coco_mini/annotations/person_keypoints_val2017.json") as f:
        truth = json.load(f)
    source = records(prepared)
    assert [int(source[i]["image_id"]) for i in range(len(source))] == [785, 40083]
    for index in range(len(source)):
        record = source[index]
        objects = detection.object_arrays(record)
        expected = [a for a in truth["annotations"] if a["image_id"] == int(record["image_id"])]
        np.testing.assert_allclose(objects["bbox"], [a["bbox"] for a in expected], rtol=1e-6)
        assert objects["label"].tolist() == [0] * len(expected)  # person, COCO id 1
        height, width = record["image"].shape[:2]  # the polygons, kept as RLE, cover the areas
        areas = detection.decode_masks(objects["mask"], height, width).sum(axis=(1, 2))
        np.testing.assert_allclose(areas, [a["area"] for a in expected], rtol=0.02)
        assert record["image"].shape[:2] == (425, 640) if index == 0 else (333, 500)
    metadata = tfds.builder("hrnet_coco_detection", data_dir=str(prepared)).info.metadata["val"]
    assert metadata["training_records"] == [0, 1] and metadata["portrait_records"] == []
    assert coco_categories.NAMES[coco_categories.LABEL_OF_ID[90]] == "toothbrush"
    assert len(set(coco_categories.CATEGORY_IDS)) == 80


def coco_tree(shared_data, tmp_path, edit) -> tuple:
    """A COCO folder of the sample's images and its annotations changed by `edit(data)`."""
    root = tmp_path / "coco"
    shutil.copytree(shared_data / "coco_mini/val2017", root / "val2017")
    (root / "annotations").mkdir()
    with open(shared_data / "coco_mini/annotations/person_keypoints_val2017.json") as f:
        data = json.load(f)
    edit(data)
    (root / "annotations/instances_val2017.json").write_text(json.dumps(data))
    return root, data


def test_bad_annotations_are_named_with_their_image_and_the_rest_kept(shared_data, tmp_path):
    """An unknown category (left out), a box under 1x1 pixel (kept for evaluation, not for
    training) and a polygon of two points (box kept, mask empty): each warning names the image
    and the annotation, and the preparation keeps everything else."""
    def edit(data):
        data["annotations"][0]["category_id"] = 12  # a gap in COCO's ids
        data["annotations"][1]["bbox"][2] = 0.0
        data["annotations"][2]["segmentation"] = [[10.0, 10.0, 20.0, 20.0]]  # two points

    root, data = coco_tree(shared_data, tmp_path, edit)
    file_names = {image["id"]: image["file_name"] for image in data["images"]}
    unknown, speck, polygon_less = data["annotations"][:3]
    with pytest.warns(UserWarning) as caught:
        prepare.prepare("coco_detection", str(root), str(tmp_path / "tfds"))
    messages = "\n".join(str(w.message) for w in caught)
    for annotation, words in ((unknown, "has category id 12, not one of COCO's 80 detection "
                                        "categories: left out"),
                              (speck, "has a 0.0x"), (polygon_less, "has no polygon")):
        assert f"{file_names[annotation['image_id']]}: annotation {annotation['id']} {words}" \
            in messages, messages
    source = tfds.builder("hrnet_coco_detection", data_dir=str(tmp_path / "tfds")).as_data_source("val")
    kept = {int(source[i]["image_id"]): detection.object_arrays(source[i])
            for i in range(len(source))}
    for image_id, objects in kept.items():
        expected = [a for a in data["annotations"] if a["image_id"] == image_id and a is not unknown]
        assert len(objects["bbox"]) == len(expected)
    masks = [m.decode() if isinstance(m, bytes) else m for m in kept[polygon_less["image_id"]]["mask"]]
    assert "" in masks


def test_resizing_follows_short_800_long_1333_into_the_orientations_bucket():
    assert detection.resize_scale(427, 640, 800, 1333) == pytest.approx(800 / 427)
    assert detection.resize_scale(100, 500, 800, 1333) == pytest.approx(1333 / 500)
    landscape, scale = detection.resize_and_pad(np.full((427, 640, 3), 9, np.uint8), 800, 1333,
                                                (800, 1344))
    assert landscape.shape == (800, 1344, 3) and scale == pytest.approx(800 / 427)
    assert landscape[:800, :1199].min() == 9 and landscape[:, 1199:].max() == 0
    portrait, _ = detection.resize_and_pad(np.full((640, 427, 3), 9, np.uint8), 800, 1333,
                                           (800, 1344))
    assert portrait.shape == (1344, 800, 3) and portrait[1199:].max() == 0
    with pytest.raises(ValueError, match="does not fit the 1000x800 canvas"):
        detection.resize_and_pad(np.zeros((100, 500, 3), np.uint8), 800, 1333, (800, 1000))


def test_training_boxes_leave_out_crowds_and_specks_and_keep_the_largest():
    objects = {"bbox": np.array([[10, 20, 30, 40], [0, 0, 50, 50], [5, 5, 0.5, 9], [1, 1, 2, 2]],
                                np.float32),
               "label": np.array([3, 7, 1, 2]), "iscrowd": np.array([0, 1, 0, 0])}
    out = detection.training_boxes(objects, 2.0, 4)
    np.testing.assert_allclose(out["boxes"][:2], [[20, 40, 80, 120], [2, 2, 6, 6]])
    assert out["labels"].tolist() == [3, 2, 0, 0] and out["box_mask"].tolist() == [1, 1, 0, 0]
    with pytest.warns(UserWarning, match=r"000000785\.jpg: 2 boxes train, data\.max_boxes=1 kept "
                                         r"\(the largest\), 1 dropped"):
        one = detection.training_boxes(objects, 1.0, 1, "000000785.jpg")
    assert one["labels"].tolist() == [3]  # the larger of the two that train
    flipped = detection.flip_boxes(objects["bbox"], 100)
    np.testing.assert_allclose(flipped[0], [60, 20, 30, 40])
    np.testing.assert_allclose(detection.flip_boxes(flipped, 100), objects["bbox"])


def test_box_masks_follow_the_boxes_that_train_and_mirror_with_the_image():
    """training_boxes' box_masks: each kept box's mask resampled inside it, in the kept boxes'
    order (largest first when max_boxes drops some); flip_masks + flip_boxes mirror them."""
    from hrnet_jax.data.synthetic import SyntheticDetection

    record = next(r for r in map(SyntheticDetection(40, (64, 64), seed=3).__getitem__, range(40))
                  if len(r["objects"]["bbox"]) == 3)
    objects = detection.object_arrays(record)
    full = detection.decode_masks(objects["mask"], 64, 64)
    out = detection.training_boxes(objects, 2.0, 4, mask_image_size=(64, 64))
    np.testing.assert_allclose(out["box_masks"][:3],
                               detection.box_relative_masks(full, objects["bbox"]))
    assert out["box_masks"].shape == (4, 56, 56) and out["box_masks"][3].max() == 0
    with pytest.warns(UserWarning, match="1 dropped"):
        two = detection.training_boxes(objects, 1.0, 2, mask_image_size=(64, 64))
    largest = np.argsort(-objects["bbox"][:, 2] * objects["bbox"][:, 3], kind="stable")[:2]
    np.testing.assert_allclose(two["box_masks"], out["box_masks"][largest])
    mirrored = {**objects, "bbox": detection.flip_boxes(objects["bbox"], 64),
                "mask": detection.flip_masks(objects["mask"], 64, 64)}
    np.testing.assert_array_equal(detection.decode_masks(mirrored["mask"], 64, 64), full[:, :, ::-1])
    flipped = detection.training_boxes(mirrored, 2.0, 4, mask_image_size=(64, 64))
    np.testing.assert_allclose(flipped["box_masks"], out["box_masks"][..., ::-1], atol=1e-5)
    del objects["mask"]
    with pytest.raises(ValueError, match="an image: the objects carry no instance masks"):
        detection.training_boxes(objects, 1.0, 4, mask_image_size=(64, 64))


def test_generated_shapes_are_boxed_tightly_and_apart():
    from hrnet_jax.data.synthetic import SyntheticDetection

    source = SyntheticDetection(20, (64, 64), seed=5)
    counts = []
    for index in range(len(source)):
        record = source[index]
        objects = detection.object_arrays(record)
        counts.append(len(objects["bbox"]))
        grey = record["image"].astype(np.float32)
        saturation = grey.max(-1) - grey.min(-1)  # the shapes are saturated, the background grey
        covered = np.zeros((64, 64), bool)
        for x, y, w, h in objects["bbox"].astype(int):
            inside = saturation[y:y + h, x:x + w] > 100
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert not covered[y:y + h, x:x + w].all()
            covered[y:y + h, x:x + w] = True
        assert (saturation > 100)[~covered].mean() < 0.01  # nothing saturated outside the boxes
        masks = detection.decode_masks(objects["mask"], 64, 64).astype(bool)
        for mask, (x, y, w, h) in zip(masks, objects["bbox"].astype(int)):  # tight in the box
            assert mask[y:y + h, x:x + w].sum() == mask.sum() and mask[y].any() and mask[:, x].any()
        assert (masks.any(0) == (saturation > 100)).mean() > 0.98
        assert set(objects["label"].tolist()) <= {0, 1, 2, 3}
    assert min(counts) >= 1 and max(counts) == 3


def test_grouped_batches_hold_one_orientation_and_every_record_once_an_epoch():
    groups = np.array([0] * 11 + [1] * 6)
    sampler = pipeline.GroupedSampler(groups, 4, seed=3)
    epoch = [sampler[i].record_key for i in range(16)]  # 2 + 1 full batches of 4... x4
    batches = np.array(epoch[:12]).reshape(3, 4)
    assert all(len(set(groups[b])) == 1 for b in batches)
    assert len(set(epoch[:12])) == 12 and sorted(groups[epoch[:12]]).count(1) == 4
    again = pipeline.GroupedSampler(groups, 4, seed=3)
    assert [again[i].record_key for i in range(24)] == [sampler[i].record_key for i in range(24)]
    next_epoch = [sampler[i].record_key for i in range(12, 24)]
    assert next_epoch != epoch[:12]  # reshuffled
    with pytest.raises(ValueError, match="no group has 20 records"):
        pipeline.GroupedSampler(groups, 20, seed=0)


def test_grouped_sampler_gives_the_same_order_to_concurrent_readers():
    """grain reads records from several threads at once, across epoch boundaries."""
    from concurrent.futures import ThreadPoolExecutor

    groups = np.random.default_rng(0).integers(0, 2, 50)
    expected = [pipeline.GroupedSampler(groups, 4, seed=1)[i].record_key for i in range(2000)]
    shared = pipeline.GroupedSampler(groups, 4, seed=1)
    positions = np.random.default_rng(1).permutation(2000)
    positions = np.sort(positions.reshape(-1, 40), axis=1).ravel()  # readers close together
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda i: shared[int(i)].record_key, positions))
    assert dict(zip(positions.tolist(), keys)) == dict(enumerate(expected))


def test_training_batches_pad_to_one_bucket_and_resume_where_they_stopped(prepared):
    """Landscape and portrait records through the loader: each batch has the shape of one
    orientation's canvas (both occur), boxes stay on their objects, and a restored iterator
    continues with the same batches."""
    task = make_task(smoke_config(prepared))
    fake = []
    for index in range(10):
        height, width = (60, 90) if index < 6 else (90, 60)
        image = np.zeros((height, width, 3), np.uint8)
        image[10:30, 20:50] = 255  # the object, boxed below
        fake.append({"image": image, "objects": {"bbox": np.array([[20, 10, 30, 20]], np.float32),
                                                 "label": np.array([index]), "area": np.array([600.0]),
                                                 "iscrowd": np.array([0])}})
    source = detection.DetectionRecords(fake, list(range(10)), portrait=[6, 7, 8, 9])
    loader = pipeline.train_loader(source, task.prepare, 2, 0, 0, task.augment)
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(5)]
    shapes = {b["image"].shape[1:3] for b in batches}
    assert shapes == {(128, 192), (192, 128)}
    for batch in batches:
        for image, box in zip(batch["image"], batch["boxes"][:, 0]):
            x0, y0, x1, y1 = np.round(box).astype(int)
            inside = image[y0 + 1:y1 - 1, x0 + 1:x1 - 1].mean()
            assert inside > 1.5 and image[..., 0].mean() < inside  # normalised white, on its box
        assert batch["box_mask"][:, 0].tolist() == [1, 1] and batch["box_mask"][:, 1:].max() == 0
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    resumed = iter(loader)
    resumed.set_state(state)
    for a, b in zip(expected, [next(resumed) for _ in range(3)]):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


def test_ground_truth_as_detections_scores_ap_one(prepared):
    """The sample's person boxes given as detections: box AP 1.0 through pycocotools."""
    source = records(prepared)
    images, rows = [], {k: [] for k in ("image_id", "bbox", "category_id", "area", "iscrowd")}
    for index in range(len(source)):
        record = source[index]
        objects = detection.object_arrays(record)
        images.append({"id": int(record["image_id"]), "height": record["image"].shape[0],
                       "width": record["image"].shape[1]})
        rows["image_id"] += [int(record["image_id"])] * len(objects["bbox"])
        rows["bbox"] += list(objects["bbox"])
        rows["category_id"] += [1] * len(objects["bbox"])
        rows["area"] += list(objects["area"])
        rows["iscrowd"] += list(objects["iscrowd"])
    rows = {k: np.asarray(v) for k, v in rows.items()}
    truth = coco.box_ground_truth(images, rows, coco_categories.CATEGORIES)
    results = coco.box_results(rows["image_id"], rows["bbox"], np.ones(len(rows["bbox"])),
                               rows["category_id"])
    figures = coco.box_ap(truth, results)
    assert figures["ap"] == pytest.approx(1.0) and figures["ar100"] == pytest.approx(1.0)
    assert figures["ap_s"] == -1.0 or figures["ap_s"] == pytest.approx(1.0)
    shifted = [{**r, "bbox": [r["bbox"][0] + 0.6 * r["bbox"][2], *r["bbox"][1:]]} for r in results]
    assert coco.box_ap(truth, shifted)["ap"] < 0.1  # IoU 0.25: a miss at every threshold


def test_ground_truth_through_our_targets_and_decoding_scores_ap_one(prepared):
    """The task's evaluation with the network replaced by the training targets of the resized
    image (probability 1 at positives, the target distances): prepare, assignment, decoding,
    NMS and the mapping back to the original pixels give box AP 1.0 on the real images."""
    config = smoke_config(prepared)
    task = make_task(config)
    strides = tuple(config.model.detector.strides)
    source = records(prepared)
    rows = []
    for index in range(len(source)):
        record = dict(source[index])
        example = task.prepare(record)
        height, width = example["image"].shape[:2]
        shapes = [(-(-height // s), -(-width // s)) for s in strides]
        outputs = perfect_head_outputs(shapes, strides, example["boxes"], example["labels"],
                                       example["box_mask"], 80)
        predict = lambda images, image_sizes=None: jax.device_get(task.postprocess(outputs))
        rows.append(task.evaluate_image(predict, record))
    # an image without boxes (48 in val2017) and without detections adds nothing but itself
    empty = {"image": np.zeros((50, 80, 3), np.uint8), "image_id": 7,
             "objects": {"bbox": [], "label": [], "area": [], "iscrowd": []}}
    nothing = {"boxes": np.zeros((1, 100, 4)), "scores": np.zeros((1, 100)),
               "classes": -np.ones((1, 100), int), "valid": np.zeros((1, 100), bool)}
    rows.append(task.evaluate_image(lambda images, image_sizes=None: nothing, empty))
    assert rows[-1]["image"].tolist() == [[7, 50, 80]] and len(rows[-1]["truth_bbox"]) == 0
    combined = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    assert len(combined["bbox"]) == 4
    figures = task.summarize(combined)
    assert figures["ap"] == pytest.approx(1.0) and figures["detections"] == 4


def test_detection_model_is_the_pyramid_plus_the_fcos_head():
    from hrnet_jax.models import create_model, tiny_arch
    from hrnet_jax.models.summary import count_params

    def outputs_and_variables(model):
        return jax.eval_shape(lambda: model.init_with_output(
            jax.random.key(0), jax.numpy.zeros((1, 64, 64, 3)), train=False))

    pyramid = count_params(outputs_and_variables(create_model("hrnet_w18", "pyramid"))[1])
    detector = count_params(outputs_and_variables(create_model("hrnet_w18", "detection"))[1])
    tower = 4 * (9 * 256 * 256 + 256 + 2 * 256)  # conv3x3 + GroupNorm, four times
    head = 2 * tower + (9 * 256 * 80 + 80) + (9 * 256 * 4 + 4) + (9 * 256 + 1) + 5
    assert detector == pyramid + head == pyramid + 4_920_666
    for strides, sizes in [((8, 16, 32, 64, 128), [8, 4, 2, 1, 1]),
                           ((4, 8, 16, 32, 64), [16, 8, 4, 2, 1])]:
        model = create_model(tiny_arch(4), "detection", num_classes=3,
                             detector=dict(strides=strides))
        outputs, _ = outputs_and_variables(model)
        assert [x.shape[1] for x in outputs["class_logits"]] == sizes
        assert outputs["class_logits"][0].shape[-1] == 3 and outputs["boxes"][0].shape[-1] == 4
    with pytest.raises(ValueError, match="pyramid strides"):
        create_model("hrnet_w18", "detection", detector=dict(strides=(16, 32, 64, 128, 256)))
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("hrnet_w18", "detection", detector=dict(channels=48))


@pytest.mark.slow  # bfloat16 compute is checked for the backbone and heads in test_models
def test_bfloat16_detector_returns_float32_outputs_close_to_float32():
    from hrnet_jax.models import create_model, tiny_arch

    x = jax.numpy.asarray(np.random.default_rng(1).uniform(-2, 2, (1, 64, 64, 3)), jax.numpy.float32)
    build = lambda **dtype: create_model(tiny_arch(8), "detection", num_classes=4,
                                         detector=dict(strides=(4, 8, 16, 32, 64), channels=64),
                                         **dtype)
    variables = build().init(jax.random.key(0), x, train=False)
    out32 = build().apply(variables, x, train=False)
    out16 = build(dtype=jax.numpy.bfloat16).apply(variables, x, train=False)
    for key in ("class_logits", "boxes", "centerness"):
        assert all(a.dtype == jax.numpy.float32 for a in out16[key])  # loss and decoding in f32
        a = np.concatenate([np.ravel(level) for level in out16[key]]).astype(np.float64)
        b = np.concatenate([np.ravel(level) for level in out32[key]]).astype(np.float64)
        # within a few percent of the outputs' scale (centerness logits start near 0)
        assert np.abs(a - b).max() < 0.05 * max(np.abs(b).max(), 1.0), key


@pytest.fixture(scope="module")
def smoke_run(prepared, tmp_path_factory):
    from hrnet_jax import main

    workdir = tmp_path_factory.mktemp("detection")
    args = ["--experiment=det_coco_fcos:w18,smoke", f"--workdir={workdir}",
            f"--set=data.data_dir={prepared}"]
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
    assert picture.shape == (425, 1280, 3)  # ground truth | detections, on the whole image
    green = (picture[..., 1] > 200) & (picture[..., 0] < 80) & (picture[..., 2] < 80)
    assert green[:, :640].sum() > 500 and green[:, 640:].sum() == 0


def test_predict_draws_captioned_boxes(smoke_run, shared_data, tmp_path):
    from hrnet_jax import main
    from hrnet_jax.tasks.detection import PREDICTION_COLOUR, draw_boxes

    workdir, args = smoke_run
    image = shared_data / "coco_mini/val2017/000000040083.jpg"
    assert main.main(args + [f"--set=data.data_dir={tmp_path}/nowhere", "--mode=predict",
                             f"--input={image}", f"--output={tmp_path}/out"]) == 0
    assert cv2.imread(str(tmp_path / "out/000000040083_detections.png")).shape == (333, 500, 3)
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
    from hrnet_jax.data import pipeline
    from hrnet_jax.training import optim, step as step_lib
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
@pytest.mark.parametrize("experiment", ["det_coco_faster_rcnn:w18", "det_coco_mask_rcnn:w18"])
def test_rcnn_smoke_trains_both_stages_and_reports_ap(prepared, tmp_path, experiment):
    """The R-CNNs' smokes on the real sample: the RPN's and the R-CNN's losses (and Mask R-CNN's
    mask loss on the sample's real outlines), mmdet's warmup from 0.02 x 0.001, COCO box (and
    mask) AP from the detections, pictures with masks."""
    from hrnet_jax import main

    assert main.main([f"--experiment={experiment}:smoke", f"--workdir={tmp_path}",
                      f"--set=data.data_dir={prepared}", "--set=loop.num_steps=2"]) == 0
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


def test_ground_truth_masks_as_detections_score_mask_ap_one(prepared):
    """pycocotools' segm evaluation on the sample's real instance masks: the ground truth as
    detections scores mask AP 1.0; the masks squeezed through Mask R-CNN's 28x28 box-relative
    grid and pasted back (bilinear, >= 0.5) keep IoU >= 0.85 with the truth and AP50 1.0."""
    source = records(prepared)
    images, truth_rows, exact, pasted = [], [], [], []
    for index in range(len(source)):
        record = source[index]
        objects = detection.object_arrays(record)
        height, width = record["image"].shape[:2]
        image_id = int(record["image_id"])
        images.append({"id": image_id, "height": height, "width": width})
        count = len(objects["bbox"])
        truth_rows.append({"image_id": np.full(count, image_id), "bbox": objects["bbox"],
                           "category_id": np.asarray(coco_categories.CATEGORY_IDS)[objects["label"]],
                           "area": objects["area"], "iscrowd": objects["iscrowd"],
                           "mask": objects["mask"]})
        full = detection.decode_masks(objects["mask"], height, width)
        small = detection.box_relative_masks(full, objects["bbox"], 28)
        corners = np.concatenate([objects["bbox"][:, :2], objects["bbox"][:, :2] + objects["bbox"][:, 2:]], 1)
        back = coco.paste_masks(small, corners, height, width)
        for truth_mask, mask in zip(full.astype(bool), back):
            assert (truth_mask & mask).sum() / (truth_mask | mask).sum() >= 0.85
        for rows, masks in ((exact, objects["mask"]), (pasted, coco.encode_masks(back))):
            rows.append({"image_id": np.full(count, image_id), "mask": list(masks),
                         "size": np.tile([height, width], (count, 1)),
                         "category_id": np.asarray(coco_categories.CATEGORY_IDS)[objects["label"]]})
    objects = {k: np.concatenate([r[k] for r in truth_rows]) for k in truth_rows[0]}
    truth = coco.box_ground_truth(images, objects, coco_categories.CATEGORIES)

    def results(rows):
        return coco.mask_results(np.concatenate([r["image_id"] for r in rows]),
                                 [m for r in rows for m in r["mask"]],
                                 np.concatenate([r["size"] for r in rows]),
                                 np.ones(sum(len(r["mask"]) for r in rows)),
                                 np.concatenate([r["category_id"] for r in rows]))

    assert coco.mask_ap(truth, results(exact))["ap"] == pytest.approx(1.0)
    assert coco.mask_ap(truth, results(pasted))["ap50"] == pytest.approx(1.0)


def test_rcnn_targets_of_the_real_sample_decode_back_to_the_truth(prepared):
    """The R-CNN training path on the sample's real boxes and outlines: `prepare` (boxes and
    box-relative masks of the boxes that train), `sample_rois` on proposals jittered around
    them, its positives' box targets decoded back onto their RoIs: their ground truth; the device's
    28x28 mask targets of RoIs equal to the boxes, pasted back into each image as evaluation
    does: every instance keeps IoU >= 0.8 with its true mask (the 28x28 grid's loss), and as
    detections they score mask AP50 1.0."""
    import jax.numpy as jnp

    from hrnet_jax.detection import sampler
    from hrnet_jax.detection.coder import decode_deltas
    from hrnet_jax.detection.mask_targets import mask_targets

    STDS = (0.1, 0.1, 0.2, 0.2)  # Faster R-CNN's coder

    config = load("det_coco_mask_rcnn:w18,smoke")
    config.data.data_dir = str(prepared)
    task = make_task(config)
    source = records(prepared)
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
