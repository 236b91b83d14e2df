"""The two-stage detectors' primitives against torchvision: RoIAlign over a pyramid, box IoU,
batched NMS, the box-delta coder; mmdet's anchors by known answers."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.detection import anchors as anchors_lib, boxes as boxes_lib, coder as coder_lib, nms, roi_align

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity

STRIDES = (4, 8, 16, 32)


def pyramid(seed=0, n=2, size=(96, 128), channels=6):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, size[0] // s, size[1] // s, channels)).astype(np.float32)
            for s in STRIDES]


def random_boxes(seed=1, n=2, r=40, size=(96, 128)):
    """Boxes of every scale (all four levels), some elongated, some crossing the border, one of
    zero width (an inverted box makes torchvision's adaptive grid negative: it fails)."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(np.log(4), np.log(700), (n, r, 1)))
    aspect = np.exp(rng.uniform(-1.5, 1.5, (n, r, 1)))
    side = np.concatenate([scale * np.sqrt(aspect), scale / np.sqrt(aspect)], -1)
    centre = rng.uniform(-10, [size[1] + 10, size[0] + 10], (n, r, 2))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], -1)
    boxes[:, 0, 2] = boxes[:, 0, 0]            # zero width
    return boxes.astype(np.float32)


def torchvision_pooled(features, boxes, levels, output_size, sampling_ratio):
    """Each box pooled by torchvision at its level's map and scale, as (N, R, P, P, C)."""
    n, r = boxes.shape[:2]
    out = np.zeros((n, r, output_size, output_size, features[0].shape[-1]), np.float32)
    for i in range(n):
        for j in range(r):
            level = int(levels[i, j])
            feature = torch.from_numpy(features[level][i:i + 1]).permute(0, 3, 1, 2)
            box = torch.from_numpy(np.concatenate([[0.0], boxes[i, j]])[None].astype(np.float32))
            pooled = torchvision.ops.roi_align(feature, box, output_size, 1.0 / STRIDES[level],
                                               sampling_ratio, aligned=True)
            out[i, j] = pooled[0].permute(1, 2, 0).numpy()
    return out


def inside_canvas(boxes, size=(512, 768)):
    """The boxes clipped to the canvas, as the detectors pool them (proposals and detections
    are clipped to the image, the ground truth lies in it); the zero-width one stays."""
    return np.clip(boxes, 0, [size[1], size[0]] * 2).astype(np.float32)


@pytest.mark.parametrize("sampling_ratio,output_size", [(2, 7), (0, 7), (0, 14)])
def test_roi_align_equals_torchvision_at_every_level(sampling_ratio, output_size):
    # A canvas large enough for every level once the boxes are clipped to it.
    features, boxes = pyramid(size=(512, 768)), inside_canvas(random_boxes(size=(512, 768)))
    levels = np.asarray(roi_align.map_levels(boxes, len(STRIDES)))
    assert set(levels.ravel()) == {0, 1, 2, 3}  # every level is exercised
    ours = jax.jit(lambda f, b: roi_align.roi_align(f, STRIDES, b, output_size,
                                                    sampling_ratio))(features, boxes)
    expected = torchvision_pooled(features, boxes, levels, output_size, sampling_ratio)
    assert np.abs(np.asarray(ours) - expected).max() <= 1e-4


def test_adaptive_sampling_is_exact_for_rois_that_need_large_grids():
    """RoIs the level mapping sends to the finest level although long and thin (a 10-pixel
    high box across the canvas: 61 feature pixels, 9 samples a bin side), boxes at the image
    edge, the largest square of each level, and a box over the whole canvas: torchvision's
    adaptive grid (sampling_ratio=0) exactly, however many samples a side it takes."""
    size = (128, 256)
    features = pyramid(size=size)
    boxes = np.array([[4.0, 8.0, 250.0, 18.0], [0.0, 0.0, 256.0, 6.0], [250.0, 0.0, 256.0, 128.0],
                      [0.0, 0.0, 111.0, 111.0], [30.0, 10.0, 250.0, 120.0],
                      [0.0, 0.0, 256.0, 128.0], [100.5, 60.25, 101.0, 61.0]], np.float32)
    boxes = np.stack([boxes, boxes[::-1]])
    levels = np.asarray(roi_align.map_levels(boxes, len(STRIDES)))
    assert levels[0, 0] == 0 and levels[0, 1] == 0  # long and thin, on the finest level
    grid = np.ceil((boxes[0, 0, 2] - boxes[0, 0, 0]) / 4 / 7)
    assert grid >= 9  # far past the old cap of 4 samples a side
    for output_size in (7, 14):
        ours = roi_align.roi_align(features, STRIDES, boxes, output_size, 0)
        expected = torchvision_pooled(features, boxes, levels, output_size, 0)
        assert np.abs(np.asarray(ours) - expected).max() <= 1e-4


def test_roi_align_window_bounds_what_the_level_mapping_allows():
    """The gathered window is the touched rectangle's bound: the whole map for the last level
    and for explicit levels; on the finer levels the mapping's area bound keeps it smaller than
    the finest map."""
    shapes = [(200, 336), (100, 168), (50, 84), (25, 42)]
    mapped = roi_align.window_size(shapes, STRIDES)
    assert 25 * 42 <= mapped < 200 * 336 // 20
    assert roi_align.window_size(shapes, STRIDES, mapped=False) == 200 * 336


def test_level_mapping_is_mmdets():
    """floor(log2(sqrt(area) / 56 + 1e-6)) clamped to 0..3: 112 and 224 start levels 1 and 2."""
    sides = np.array([10, 111.9, 112, 223.9, 224, 447.9, 448, 2000], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], -1)
    assert roi_align.map_levels(boxes, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_iou_matrix_equals_torchvision():
    a, b = random_boxes(3)[0], random_boxes(4)[0]
    a, b = a[(a[:, 2] > a[:, 0])], b[(b[:, 2] > b[:, 0])]
    expected = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(np.asarray(boxes_lib.iou_matrix(a, b)), expected, atol=1e-6)


def test_class_wise_nms_keeps_what_torchvisions_batched_nms_keeps_in_its_order():
    rng = np.random.default_rng(5)
    corners = rng.uniform(0, 60, (400, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(4, 40, (400, 2))], 1).astype(np.float32)
    scores = rng.uniform(0.01, 1, 400).astype(np.float32)
    classes = rng.integers(0, 4, 400)
    for threshold in (0.5, 0.7):
        kept = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                           torch.from_numpy(classes), threshold).numpy()
        assert 50 < len(kept) < 400
        out = jax.jit(nms.class_wise_nms, static_argnums=(3, 4))(
            boxes, scores, classes, threshold, 400)
        assert int(np.asarray(out["valid"]).sum()) == len(kept)
        np.testing.assert_array_equal(np.asarray(out["boxes"])[:len(kept)], boxes[kept])
        np.testing.assert_array_equal(np.asarray(out["classes"])[:len(kept)], classes[kept])


@pytest.mark.parametrize("stds", [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)])
def test_delta_coder_equals_torchvisions_and_round_trips(stds):
    """torchvision's BoxCoder with weights 1 / stds is mmdet's DeltaXYWHBBoxCoder (means 0)."""
    from torchvision.models.detection._utils import BoxCoder

    rng = np.random.default_rng(6)
    anchors = random_boxes(7)[0]
    anchors = anchors[(anchors[:, 2] > anchors[:, 0]) & (anchors[:, 3] > anchors[:, 1])]
    targets = anchors + rng.normal(0, 8, anchors.shape).astype(np.float32)
    targets[:, 2:] = np.maximum(targets[:, 2:], targets[:, :2] + 1)
    coder = BoxCoder(weights=tuple(1.0 / s for s in stds))
    deltas = np.asarray(coder_lib.encode_deltas(anchors, targets, stds))
    expected = coder.encode_single(torch.from_numpy(targets), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(deltas, expected, rtol=1e-4, atol=1e-4)
    decoded = np.asarray(coder_lib.decode_deltas(anchors, deltas, stds))
    np.testing.assert_allclose(decoded, targets, rtol=1e-5, atol=1e-3)  # round trip
    # Beyond the size clamp: mmdet clamps log ratios on both sides, torchvision above only.
    limit = abs(np.log(16 / 1000))
    wild = rng.normal(0, 3, deltas.shape).astype(np.float32)
    wild[:, 2:] = np.maximum(wild[:, 2:], -limit / np.asarray(stds[2:])).astype(np.float32)
    shrunk = np.asarray(coder_lib.decode_deltas(anchors[:1], np.array([[0, 0, -99, -99]],
                                                                      np.float32), stds))
    np.testing.assert_allclose(shrunk[0, 2:] - shrunk[0, :2],
                               (anchors[0, 2:] - anchors[0, :2]) * 16 / 1000, rtol=1e-4)
    expected = coder.decode_single(torch.from_numpy(wild), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(np.asarray(coder_lib.decode_deltas(anchors, wild, stds)),
                               expected, rtol=1e-5, atol=1e-2)
    clipped = np.asarray(coder_lib.decode_deltas(anchors, wild, stds, image_size=(50, 70)))
    assert clipped.min() >= 0 and clipped[:, [0, 2]].max() <= 70 and clipped[:, [1, 3]].max() <= 50


def test_anchors_are_mmdets():
    """Scale 8, ratios 0.5 / 1 / 2 (height / width) on stride 4: 32x32 area, centred on the
    cell corner; cells row-major, the 3 anchors of a cell together."""
    base = anchors_lib.base_anchors(4)
    side = 32 / np.sqrt(2)
    np.testing.assert_allclose(base, [[-side, -side / 2, side, side / 2], [-16, -16, 16, 16],
                                      [-side / 2, -side, side / 2, side]], rtol=1e-6)
    grid = anchors_lib.grid_anchors((2, 3), 4)
    assert grid.shape == (18, 4)
    np.testing.assert_allclose(grid[3 * 1 + 1], [4 - 16, -16, 4 + 16, 16])  # row 0, column 1
    np.testing.assert_allclose(grid[3 * 3 + 1], [-16, 4 - 16, 16, 4 + 16])  # row 1, column 0


def mmdet_assign(overlaps, pos_thr, neg_thr, min_pos, low_quality):
    """mmdet's MaxIoUAssigner.assign_wrt_overlaps, step by step (overlaps: gts x boxes)."""
    assigned = np.full(overlaps.shape[1], -1)
    best, best_truth = overlaps.max(0), overlaps.argmax(0)
    assigned[(best >= 0) & (best < neg_thr)] = 0
    positive = best >= pos_thr
    assigned[positive] = best_truth[positive] + 1
    if low_quality:
        truth_best = overlaps.max(1)
        for i in range(overlaps.shape[0]):
            if truth_best[i] >= min_pos:
                assigned[overlaps[i] == truth_best[i]] = i + 1
    return assigned


@pytest.mark.parametrize("thresholds", [(0.7, 0.3, 0.3, True), (0.5, 0.5, 0.5, False)])
def test_assignment_is_mmdets_max_iou_assigner(thresholds):
    """The RPN's (0.7 / 0.3, low-quality matches) and the R-CNN's (0.5 / 0.5) settings, on
    anchors and ground truths that overlap at every level, padded ground truths ignored."""
    from hrnet_jax.detection import assigner

    anchors = np.concatenate([anchors_lib.grid_anchors((24, 32), 4),
                              anchors_lib.grid_anchors((12, 16), 8)])
    rng = np.random.default_rng(8)
    corner = rng.uniform(0, 80, (6, 2))
    truth = np.concatenate([corner, corner + rng.uniform(28, 70, (6, 2))], 1).astype(np.float32)
    truth[3] = truth[1]  # two identical ground truths: the later wins the low-quality claims
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last is padding
    assigned = np.asarray(jax.jit(assigner.assign, static_argnums=(3, 4, 5, 6))(
        anchors, truth, mask, *thresholds))
    expected = mmdet_assign(np.asarray(boxes_lib.iou_matrix(truth[:5], anchors)), *thresholds)
    np.testing.assert_array_equal(assigned, expected)
    assert (assigned > 0).sum() >= 10 and (assigned == 0).sum() > 100
    assert (assigned == -1).any() == (thresholds[1] < thresholds[0])  # the band between
    if thresholds[3]:  # the duplicate ground truths: the later one's claims stand
        assert 4 in assigned and 2 not in assigned


def test_sampling_takes_the_quota_of_positives_and_fills_with_negatives():
    from hrnet_jax.detection import sampler

    assigned = np.zeros(3000, np.int32)
    assigned[:400] = -1
    assigned[400:460] = 3  # 60 positives: fewer than the quota of 128
    sample = jax.jit(sampler.sample, static_argnums=(2, 3))
    positive, negative = map(np.asarray, sample(assigned, jax.random.key(0), 256, 0.5))
    assert positive.sum() == 60 and negative.sum() == 196
    assert (assigned[positive] > 0).all() and (assigned[negative] == 0).all()
    assigned[460:1000] = 1  # 600 positives: the quota binds
    positive, negative = map(np.asarray, sample(assigned, jax.random.key(0), 256, 0.5))
    assert positive.sum() == 128 and negative.sum() == 128
    other, _ = map(np.asarray, sample(assigned, jax.random.key(1), 256, 0.5))
    assert (other != positive).any()  # another key, another subset
    # uniform: over many keys, every positive is picked about 128 / 600 of the time
    picks = sum(np.asarray(sample(assigned, jax.random.key(k), 256, 0.5)[0]) for k in range(200))
    assert abs(picks[400:1000].mean() / 200 - 128 / 600) < 0.01 and picks[400:1000].min() > 10


def test_proposals_are_mmdets_per_level_nms_of_the_best_anchors():
    """Per level the pre_nms best anchors, decoded and clipped, NMS 0.7 within each level
    (torchvision's batched_nms with the level as the class), the best `keep` overall."""
    from hrnet_jax.detection import proposals as proposals_lib

    rng = np.random.default_rng(9)
    shapes, strides, image = [(16, 24), (8, 12), (4, 6)], (4, 8, 16), (64, 96)
    anchors = [anchors_lib.grid_anchors(s, stride) for s, stride in zip(shapes, strides)]
    objectness = [rng.normal(size=len(a)).astype(np.float32) for a in anchors]
    deltas = [rng.normal(0, 0.3, (len(a), 4)).astype(np.float32) for a in anchors]
    found = jax.device_get(jax.jit(proposals_lib.propose, static_argnums=(3, 4, 5, 6))(
        objectness, deltas, anchors, image, 300, 200, 0.7))
    boxes, scores, levels = [], [], []
    for level, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
        top = np.argsort(-o, kind="stable")[:300]
        decoded = coder_decode(a[top], d[top])
        boxes.append(np.clip(decoded, 0, [96, 64, 96, 64]))
        scores.append(1 / (1 + np.exp(-o[top])))
        levels.append(np.full(len(top), level))
    boxes, scores, levels = (np.concatenate(x) for x in (boxes, scores, levels))
    # mmdet (>= 2.13) drops the boxes clipped to zero width or height before NMS.
    nonzero = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    assert not nonzero.all()  # some anchors at the border decode outside the image
    boxes, scores, levels = boxes[nonzero], scores[nonzero], levels[nonzero]
    kept = torchvision.ops.batched_nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores),
                                       torch.from_numpy(levels), 0.7).numpy()[:200]
    assert found["valid"].sum() == len(kept) == 200
    np.testing.assert_allclose(found["scores"], scores[kept], rtol=1e-6)
    np.testing.assert_allclose(found["boxes"], boxes[kept], rtol=1e-5, atol=1e-3)


def coder_decode(anchors, deltas):
    from torchvision.models.detection._utils import BoxCoder

    return BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(torch.from_numpy(deltas),
                                                        torch.from_numpy(anchors)).numpy()


def test_rpn_head_lays_out_anchors_as_mmdets_rpn_head():
    """The same weights in a PyTorch RPN head written as mmdet's (rpn_conv, rpn_cls, rpn_reg;
    outputs permuted to (H, W, A) and (H, W, A, 4)): equal outputs, in grid_anchors' order."""
    from hrnet_jax.models.rcnn_heads import RPN

    head = RPN(num_anchors=3, channels=16)
    shapes = [(8, 12), (4, 6)]
    levels = [np.random.default_rng(k).normal(size=(2, h, w, 8)).astype(np.float32)
              for k, (h, w) in enumerate(shapes)]
    sizes = np.array([[32, 48], [32, 48]], np.float32)
    variables = head.init(jax.random.key(0), levels, sizes, 10, 10)
    out = head.apply(variables, levels, sizes, 10, 10)
    splits = np.cumsum([h * w * 3 for h, w in shapes])[:-1]
    objectness = np.split(np.asarray(out["objectness"]), splits, 1)
    deltas = np.split(np.asarray(out["deltas"]), splits, 1)
    params = jax.tree.map(np.asarray, variables["params"])
    conv = lambda p: (torch.from_numpy(p["kernel"].transpose(3, 2, 0, 1).copy()),
                      torch.from_numpy(p["bias"].copy()))
    for level, x in enumerate(levels):
        features = torch.relu(torch.nn.functional.conv2d(
            torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), *conv(params["shared"]), padding=1))
        cls = torch.nn.functional.conv2d(features, *conv(params["objectness"]))
        reg = torch.nn.functional.conv2d(features, *conv(params["deltas"]))
        expected_cls = cls.permute(0, 2, 3, 1).reshape(2, -1).numpy()
        expected_reg = reg.permute(0, 2, 3, 1).reshape(2, -1, 4).numpy()
        np.testing.assert_allclose(np.asarray(objectness[level]), expected_cls, atol=1e-5)
        np.testing.assert_allclose(np.asarray(deltas[level]), expected_reg, atol=1e-5)
        assert objectness[level].shape[1] == len(anchors_lib.grid_anchors(x.shape[1:3], 4))


def test_box_head_equals_torchvisions_two_mlp_head_and_predictor():
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    from hrnet_jax.models.rcnn_heads import BoxHead

    torch.manual_seed(0)
    mlp, predictor = TwoMLPHead(8 * 7 * 7, 32), FastRCNNPredictor(32, 5 + 1)
    head = BoxHead(num_classes=5, hidden=32)
    rois = np.random.default_rng(0).normal(size=(2, 3, 7, 7, 8)).astype(np.float32)
    dense = lambda layer: {"kernel": layer.weight.detach().numpy().T,
                           "bias": layer.bias.detach().numpy()}
    # torchvision's background is class 0, mmdet's (ours) the last: the rows move.
    order = list(range(1, 6)) + [0]
    classifier = dense(predictor.cls_score)
    classifier = {"kernel": classifier["kernel"][:, order], "bias": classifier["bias"][order]}
    deltas = dense(predictor.bbox_pred)  # 6 x 4 outputs: drop torchvision's background boxes
    deltas = {"kernel": deltas["kernel"][:, 4:], "bias": deltas["bias"][4:]}
    params = {"fc1": dense(mlp.fc6), "fc2": dense(mlp.fc7), "classifier": classifier,
              "deltas": deltas}
    logits, box_deltas = head.apply({"params": params}, rois)
    with torch.no_grad():
        flat = torch.from_numpy(rois.reshape(6, 7, 7, 8).transpose(0, 3, 1, 2).copy())
        scores, boxes = predictor(mlp(flat))
    np.testing.assert_allclose(np.asarray(logits).reshape(6, 6), scores.numpy()[:, order],
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(box_deltas).reshape(6, 5, 4),
                               boxes.numpy().reshape(6, 6, 4)[:, 1:], atol=1e-5)


def test_mask_head_equals_torchvisions_mask_heads_and_predictor():
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    from hrnet_jax.models.rcnn_heads import MaskHead

    torch.manual_seed(1)
    convs, predictor = MaskRCNNHeads(8, (16, 16, 16, 16), 1), MaskRCNNPredictor(16, 16, 5)
    head = MaskHead(num_classes=5, channels=16)
    rois = np.random.default_rng(1).normal(size=(2, 3, 14, 14, 8)).astype(np.float32)
    conv = lambda layer: {"kernel": layer.weight.detach().numpy().transpose(2, 3, 1, 0),
                          "bias": layer.bias.detach().numpy()}
    params = {f"conv{k}": conv(convs[k][0]) for k in range(4)}
    # ConvTranspose2d's (in, out, 2, 2) weight converts as a conv's (weights.from_torch's rule)
    params["upsample"] = conv(predictor.conv5_mask)
    params["classifier"] = conv(predictor.mask_fcn_logits)
    masks = np.asarray(head.apply({"params": params}, rois))
    with torch.no_grad():
        expected = predictor(convs(torch.from_numpy(rois.reshape(6, 14, 14, 8)
                                                    .transpose(0, 3, 1, 2).copy())))
    assert masks.shape == (2, 3, 28, 28, 5)
    np.testing.assert_allclose(masks.reshape(6, 28, 28, 5), expected.numpy().transpose(0, 2, 3, 1),
                               atol=1e-5)


def test_rcnn_detections_equal_torchvisions_postprocessing():
    """torchvision's RoIHeads.postprocess_detections (softmax, class-specific boxes decoded with
    weights 10, 10, 5, 5 = 1 / RCNN_STDS, clipped, score > 0.05, batched NMS 0.5, 100 kept) on
    the same logits and deltas, its background class 0 moved last."""
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection._utils import BoxCoder

    from hrnet_jax.detection import decode

    rng = np.random.default_rng(10)
    # Inside the image, so that no decoded box is clipped to nothing: torchvision drops boxes
    # under 0.01 pixels, mmdet (and we) keep them.
    centre, side = rng.uniform(30, [98, 66], (300, 2)), rng.uniform(8, 50, (300, 2))
    rois = np.concatenate([centre - side / 2, centre + side / 2], 1).astype(np.float32)
    classes = 4
    logits = rng.normal(0, 2, (len(rois), classes + 1)).astype(np.float32)
    deltas = rng.normal(0, 0.7, (len(rois), classes, 4)).astype(np.float32)
    valid = np.ones(len(rois), np.float32)
    found = jax.device_get(jax.jit(decode.box_detections, static_argnums=(4, 5))(
        logits, deltas, rois, valid, (96, 128), (0.1, 0.1, 0.2, 0.2)))
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 100)
    heads.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    torch_logits = np.concatenate([logits[:, -1:], logits[:, :-1]], 1)  # background first
    torch_deltas = np.concatenate([np.zeros((len(rois), 1, 4), np.float32), deltas], 1)
    boxes, scores, labels = heads.postprocess_detections(
        torch.from_numpy(torch_logits), torch.from_numpy(torch_deltas.reshape(len(rois), -1)),
        [torch.from_numpy(rois)], [(96, 128)])
    count = int(found["valid"].sum())
    assert count == len(scores[0]) > 20
    np.testing.assert_allclose(found["scores"][:count], scores[0].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(found["classes"][:count], labels[0].numpy() - 1)
    np.testing.assert_allclose(found["boxes"][:count], boxes[0].numpy(), rtol=1e-5, atol=1e-3)


def test_roi_sampling_adds_the_ground_truth_and_fills_fixed_slots():
    from hrnet_jax.detection import sampler

    truth = np.array([[10, 10, 50, 40], [60, 20, 90, 80], [0, 0, 0, 0]], np.float32)
    labels, mask = np.array([2, 0, 0]), np.array([1, 1, 0], np.float32)
    rng = np.random.default_rng(12)
    jitter = rng.normal(0, 3, (40, 4)).astype(np.float32)
    proposals = np.concatenate([truth[rng.integers(0, 2, 40)] + jitter,
                                random_boxes(13, n=1, r=60)[0]]).astype(np.float32)
    valid = np.ones(len(proposals), np.float32)
    valid[-10:] = 0  # padding of the RPN's static output
    out = jax.device_get(jax.jit(sampler.sample_rois, static_argnums=(6, 7, 8, 9, 10))(
        proposals, valid, truth, labels, mask, jax.random.key(0), 3, (0.1, 0.1, 0.2, 0.2), 0.5,
        64, 0.25))
    positive, slot_valid = out["positive"], out["valid"]
    assert positive.sum() == 16 and slot_valid.sum() == 64  # the quota, then negatives
    assert positive[:16].all() and not positive[16:].any()  # positives first
    np.testing.assert_array_equal(out["labels"][positive], labels[out["matched"][positive]])
    assert (out["labels"][~positive] == 3).all()  # background = num_classes
    ious = np.asarray(boxes_lib.iou_matrix(out["rois"], truth[:2])).max(1)
    assert (ious[positive] >= 0.5).all() and (ious[slot_valid & ~positive] < 0.5).all()
    sampled = {tuple(np.round(b, 3)) for b in out["rois"][slot_valid]}
    assert not sampled & {tuple(np.round(b, 3)) for b in proposals[-10:]}  # padding never drawn
    assert (0.0, 0.0, 0.0, 0.0) not in sampled  # nor the padded ground truth
    # Few candidates: the slots beyond them are invalid, and the ground truths are positives.
    few = jax.device_get(sampler.sample_rois(proposals[:3], valid[:3], truth, labels, mask,
                                             jax.random.key(1), 3, (0.1, 0.1, 0.2, 0.2), 0.5,
                                             64, 0.25))
    assert few["valid"].sum() == 5 and few["positive"].sum() >= 2


def test_losses_known_answers():
    """Zero logits: sigmoid / softmax cross-entropy log 2 / log(K + 1); deltas equal to their
    targets: no box loss, and one unit off on one coordinate of every positive: positives /
    sampled."""
    from hrnet_jax.detection import assigner, sampler
    from hrnet_jax.tasks import rcnn

    anchors = anchors_lib.grid_anchors((8, 8), 8)
    truth = np.array([[[8, 8, 60, 50], [0, 0, 0, 0]]], np.float32)
    mask = np.array([[1, 0]], np.float32)
    zeros = np.zeros((1, len(anchors)), np.float32)
    assigned = assigner.assign(anchors, truth[0], mask[0], 0.7, 0.3, 0.3, True)
    targets = np.asarray(coder_lib.encode_deltas(anchors, truth[0][np.maximum(assigned - 1, 0)]))
    deltas = np.where((np.asarray(assigned) > 0)[:, None], targets, 0.0)[None].astype(np.float32)
    loss, figures = rcnn.rpn_loss(zeros, deltas, anchors, truth, mask, jax.random.key(0))
    np.testing.assert_allclose(figures["loss_rpn_cls"], np.log(2), rtol=1e-6)
    assert abs(float(figures["loss_rpn_box"])) < 1e-5
    positive, negative = sampler.sample(assigned, jax.random.split(jax.random.key(0), 1)[0], 256, 0.5)
    off = deltas + np.array([1.0, 0, 0, 0], np.float32)
    _, figures = rcnn.rpn_loss(zeros, off, anchors, truth, mask, jax.random.key(0))
    expected = float(np.sum(positive)) / float(np.sum(positive | negative))
    np.testing.assert_allclose(figures["loss_rpn_box"], expected, rtol=1e-5)

    labels = np.array([1, 4, 4, 0])
    targets = {"labels": labels, "deltas": np.ones((4, 4), np.float32),
               "positive": labels < 4, "valid": np.array([True, True, True, False])}
    loss, figures = rcnn.rcnn_loss(np.zeros((4, 5), np.float32), np.ones((4, 4, 4), np.float32),
                                   targets)
    np.testing.assert_allclose(figures["loss_rcnn_cls"], np.log(5), rtol=1e-6)
    assert float(figures["loss_rcnn_box"]) == 0.0


@pytest.mark.parametrize("head", ["faster_rcnn", "mask_rcnn"])
def test_rcnn_weights_in_mmdets_layout_round_trip(head):
    """mmdet's names for every part (backbone., neck., rpn_head., roi_head.bbox_head., Mask
    R-CNN's roi_head.mask_head. with the transposed conv's (in, out, 2, 2) weight), the number
    of classes read from fc_cls (background row excluded), strict both ways."""
    from hrnet_jax import weights
    from hrnet_jax.models import create_model, tiny_arch

    from test_weights import assert_state_dicts_equal

    arch = tiny_arch(4)
    model = create_model(arch, head, 3, detector=dict(channels=32))
    rng = np.random.default_rng(14)  # shapes traced only (nothing compiled), values random
    variables = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                             weights.abstract_variables(model))
    state_dict = weights.to_torch(variables, head)
    assert "backbone.stage2.0.branches.0.0.conv1.weight" in state_dict
    shapes = {"backbone.conv1.weight": (8, 3, 3, 3),
              "neck.reduction_conv.conv.weight": (32, 60, 1, 1),
              "rpn_head.rpn_cls.weight": (3, 32, 1, 1),
              "rpn_head.rpn_reg.weight": (12, 32, 1, 1),
              "roi_head.bbox_head.shared_fcs.0.weight": (1024, 32 * 7 * 7),
              "roi_head.bbox_head.fc_cls.weight": (4, 1024),
              "roi_head.bbox_head.fc_reg.weight": (12, 1024)}
    if head == "mask_rcnn":  # FCNMaskHead: convs.K.conv, upsample (ConvTranspose2d), conv_logits
        shapes.update({"roi_head.mask_head.convs.3.conv.weight": (32, 32, 3, 3),
                       "roi_head.mask_head.upsample.weight": (32, 32, 2, 2),
                       "roi_head.mask_head.conv_logits.weight": (3, 32, 1, 1)})
        upsample = variables["params"]["head"]["mask_head"]["upsample"]["kernel"]  # (2, 2, out, in)
        np.testing.assert_array_equal(state_dict["roi_head.mask_head.upsample.weight"],
                                      np.transpose(upsample, (3, 2, 0, 1)))
    assert not [k for k in state_dict if "mask_head" in k] or head == "mask_rcnn"
    for key, shape in shapes.items():
        assert state_dict[key].shape == shape, key
    loaded = weights.convert(arch, head, state_dict, detector=dict(channels=32))
    assert loaded["params"]["head"]["box_head"]["classifier"]["kernel"].shape == (1024, 4)
    assert_state_dicts_equal(weights.to_torch(loaded, head), state_dict)
    del state_dict["rpn_head.rpn_reg.bias"]
    with pytest.raises(weights.WeightLoadError, match=r"rpn_head\.rpn_reg\.bias"):
        weights.convert(arch, head, state_dict, detector=dict(channels=32))


def test_instance_masks_decode_to_cocos_areas_and_targets_agree_with_roi_aligned_masks(
        shared_data):
    """The sample's person polygons, as compressed RLE and back, cover COCO's `area` (the
    polygon's, within 2% of the rasterised mask: the outline's pixels).
    mmdet's mask target is the full-size mask RoIAligned (aligned, adaptive) to 28x28, >= 0.5;
    ours reads the 56x56 box-relative copy: on RoIs jittered around the boxes at least 97% of
    each target's pixels agree (they differ along the outline only)."""
    import json

    from hrnet_jax.data import detection
    from hrnet_jax.detection import mask_targets

    with open(shared_data / "coco_mini/annotations/person_keypoints_val2017.json") as f:
        coco = json.load(f)
    images = {image["id"]: image for image in coco["images"]}
    rng = np.random.default_rng(15)
    for annotation in coco["annotations"]:
        height, width = images[annotation["image_id"]]["height"], images[annotation["image_id"]]["width"]
        rle = detection.instance_rle(annotation["segmentation"], height, width)
        full = detection.decode_masks([rle], height, width)
        assert full.sum() == pytest.approx(annotation["area"], rel=0.02)  # rasterised outline
        box = np.array(annotation["bbox"], np.float32)
        relative = detection.box_relative_masks(full, box[None])
        truth = np.concatenate([box[:2], box[:2] + box[2:]])[None]
        rois = (truth + rng.normal(0, 0.08, (16, 4)) * np.tile(box[2:], 2)).astype(np.float32)
        ours = np.asarray(mask_targets.mask_targets(rois, truth, relative, np.zeros(16, np.int32)))
        theirs = torchvision.ops.roi_align(torch.from_numpy(full[None].astype(np.float32)),
                                           [torch.from_numpy(rois)], 28, 1.0, 0, aligned=True)
        theirs = (theirs[:, 0].numpy() >= 0.5).astype(np.float32)
        assert theirs.mean() > 0.2  # a person, not an empty target
        assert (ours == theirs).mean(axis=(1, 2)).min() >= 0.97
    assert detection.instance_rle([[1.0, 2.0, 3.0, 4.0]], 10, 10) == ""  # two points: no mask
    assert detection.decode_masks([""], 4, 5).sum() == 0


def test_mask_loss_known_answers():
    from hrnet_jax.tasks import rcnn

    logits = np.zeros((3, 4, 4, 2), np.float32)
    targets = np.ones((3, 4, 4), np.float32)
    positive = np.array([True, True, False])
    np.testing.assert_allclose(rcnn.mask_loss(logits, targets, np.array([0, 1, 0]), positive),
                               np.log(2), rtol=1e-6)
    logits[0, ..., 0] = 20.0  # RoI 0 certain of its class's mask: only RoI 1 costs
    np.testing.assert_allclose(rcnn.mask_loss(logits, targets, np.array([0, 1, 0]), positive),
                               np.log(2) / 2, rtol=1e-4)


def test_roi_align_speed_script_times_ours_against_torchvision(capsys):
    """scripts/roi_align_speed.py at tiny sizes: every case prints its JSON with our time and
    torchvision's, and the two poolings agree (both exact)."""
    import importlib.util
    import json
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "roi_align_speed.py"
    spec = importlib.util.spec_from_file_location("roi_align_speed", path)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    results = script.main(["--image", "128,192", "--channels", "4", "--repeats", "1"])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == results
    assert [(r["head"], r["phase"]) for r in results] == [
        ("box", "forward"), ("box", "forward_backward"), ("mask", "forward"),
        ("mask", "forward_backward")]
    for result in results:
        assert result["ours_ms"] > 0 and result["torchvision_forward_ms"] > 0
        assert result["max_difference"] < 1e-4
