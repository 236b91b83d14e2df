"""The FCOS detector (hrnet_jax/models/fcos_head.py): the pyramid plus the head, in bfloat16
too; mmdet's HRNetV2p FCOS checkpoints in JAX: the key layout loads strictly and round trips, the
`mmdet` FCOS style computes what mmdet's modules compute on the same weights (BGR input
included), and its decoding keeps what mmdet's test procedure keeps.

The PyTorch side is written here from mmdet's module structure and names (HRFPN; FCOSHead with
GroupNorm towers without conv biases, centerness on the classification tower, exp(scale x
regression) in pixels), on timm's HRNet backbone whose names are mmdet's after `backbone.`."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrnet_jax import weights
from hrnet_jax.detection.decode import point_detections
from hrnet_jax.models import create_model
from hrnet_jax.tasks import fcos

from test_weights import assert_state_dicts_equal, numpy_state_dict, randomised

CHANNELS, CLASSES, STRIDES = 64, 5, (8, 16, 32, 64, 128)


class ConvModule(nn.Module):
    """mmcv's ConvModule: `conv` and, with a norm, `gn` (then no conv bias)."""

    def __init__(self, cin, cout, kernel, stride=1, norm=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=not norm)
        if norm:
            self.gn = nn.GroupNorm(32, cout)

    def forward(self, x):
        x = self.conv(x)
        return F.relu(self.gn(x)) if hasattr(self, "gn") else x


class HRFPN(nn.Module):
    def __init__(self, in_channels, out_channels, stride=2, num_outs=5):
        super().__init__()
        self.reduction_conv = ConvModule(sum(in_channels), out_channels, 1)
        self.fpn_convs = nn.ModuleList(ConvModule(out_channels, out_channels, 3, stride)
                                       for _ in range(num_outs))

    def forward(self, inputs):
        ups = [inputs[0]] + [F.interpolate(x, scale_factor=2 ** i, mode="bilinear")
                             for i, x in enumerate(inputs) if i]
        out = self.reduction_conv(torch.cat(ups, 1))
        pooled = [out] + [F.avg_pool2d(out, 2 ** i, 2 ** i) for i in range(1, len(self.fpn_convs))]
        return [conv(x) for conv, x in zip(self.fpn_convs, pooled)]


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))


class FCOSHead(nn.Module):
    def __init__(self, classes, channels, levels=5):
        super().__init__()
        self.cls_convs = nn.ModuleList(ConvModule(channels, channels, 3, norm=True) for _ in range(4))
        self.reg_convs = nn.ModuleList(ConvModule(channels, channels, 3, norm=True) for _ in range(4))
        self.conv_cls = nn.Conv2d(channels, classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(levels))

    def forward(self, levels):
        out = {"class_logits": [], "boxes": [], "centerness": []}
        for x, scale in zip(levels, self.scales):
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            out["class_logits"].append(self.conv_cls(cls_feat))
            out["boxes"].append((scale.scale * self.conv_reg(reg_feat)).exp())
            out["centerness"].append(self.conv_centerness(cls_feat))
        return out


@pytest.fixture(scope="module")
def mmdet_fcos():
    """A checkpoint in mmdet's layout (backbone. / neck. / bbox_head.) and its modules."""
    import timm

    torch.manual_seed(5)
    backbone = randomised(timm.create_model("hrnet_w18_small", features_only=True,
                                            feature_location=""), 5).eval()
    neck, head = HRFPN([16, 32, 64, 128], CHANNELS), FCOSHead(CLASSES, CHANNELS)
    with torch.no_grad():  # trained-looking parameters: every tensor matters
        for module in (neck, head):
            for name, p in module.named_parameters():
                p.copy_(torch.randn(p.shape) * (0.05 if p.ndim == 4 else 0.3)
                        + (1.0 if name.endswith("gn.weight") else 0.0))
    checkpoint = {**numpy_state_dict(backbone, "backbone."), **numpy_state_dict(neck, "neck."),
                  **numpy_state_dict(head, "bbox_head.")}
    return (backbone, neck, head), checkpoint


def load(checkpoint, **options):
    return weights.convert("hrnet_w18_small", "detection", checkpoint, bgr=True,
                           detector=dict(style="mmdet", channels=CHANNELS, **options))


def test_mmdet_checkpoint_loads_strictly_and_round_trips(mmdet_fcos):
    _, checkpoint = mmdet_fcos
    variables = load(checkpoint)
    assert variables["params"]["head"]["fcos"]["cls_logits"]["kernel"].shape[-1] == CLASSES
    assert_state_dicts_equal(weights.to_torch(variables, "detection", bgr=True), checkpoint)
    # The improved style's towers have biases that mmdet's checkpoint lacks: named.
    with pytest.raises(weights.WeightLoadError, match=r"bbox_head\.cls_convs\.0\.conv\.bias"):
        weights.convert("hrnet_w18_small", "detection", checkpoint,
                        detector=dict(channels=CHANNELS))


@pytest.fixture(scope="module")
def both_outputs(mmdet_fcos):
    (backbone, neck, head), checkpoint = mmdet_fcos
    model = create_model("hrnet_w18_small", "detection", CLASSES,
                         detector=dict(style="mmdet", channels=CHANNELS))
    rgb = np.random.default_rng(0).normal(size=(1, 128, 192, 3)).astype(np.float32)
    ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(load(checkpoint), rgb)
    bgr = torch.from_numpy(rgb[..., ::-1].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        theirs = head(neck(backbone(bgr)[1:]))  # timm lists the stem first
    theirs = {k: [x.numpy().transpose(0, 2, 3, 1) for x in v] for k, v in theirs.items()}
    theirs["centerness"] = [x[..., 0] for x in theirs["centerness"]]
    return jax.device_get(ours), theirs


@pytest.mark.parity
def test_mmdet_style_computes_mmdets_outputs_from_rgb_images(both_outputs):
    ours, theirs = both_outputs
    for key in ("class_logits", "boxes", "centerness"):
        for level, (a, b) in enumerate(zip(ours[key], theirs[key])):
            assert a.shape == b.shape, (key, level)
            np.testing.assert_allclose(a, b, atol=2e-4 * np.abs(b).max() + 1e-6,
                                       err_msg=f"{key} level {level}")


def mmdet_detections(outputs, score_thr=0.05, nms_pre=1000, iou=0.5, max_per_img=100):
    """mmdet's FCOS test procedure on one image's head outputs: per level the nms_pre points of
    the best max-class sigmoid(cls) x sigmoid(centerness), boxes from the points' distances,
    every class scored p x centerness above score_thr, batched NMS, the best max_per_img."""
    import torchvision

    boxes, scores, labels = [], [], []
    for level, stride in enumerate(STRIDES):
        logits = outputs["class_logits"][level][0]
        h, w, classes = logits.shape
        p = 1 / (1 + np.exp(-logits.reshape(-1, classes)))
        centre = 1 / (1 + np.exp(-outputs["centerness"][level][0].reshape(-1)))
        distances = outputs["boxes"][level][0].reshape(-1, 4)
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        points = np.stack([xs.ravel(), ys.ravel()], -1) * stride + stride // 2
        keep = np.argsort(-(p * centre[:, None]).max(1), kind="stable")[:nms_pre]
        level_boxes = np.concatenate([points - distances[:, :2], points + distances[:, 2:]], 1)
        product = p[keep] * centre[keep, None]
        cell, cls = np.nonzero(product > score_thr)
        boxes.append(level_boxes[keep][cell])
        scores.append(product[cell, cls])
        labels.append(cls)
    boxes, scores, labels = (np.concatenate(x) for x in (boxes, scores, labels))
    kept = torchvision.ops.batched_nms(torch.from_numpy(boxes).float(),
                                       torch.from_numpy(scores).float(),
                                       torch.from_numpy(labels), iou).numpy()[:max_per_img]
    return boxes[kept], scores[kept], labels[kept]


@pytest.mark.parity
def test_mmdet_style_decoding_keeps_what_mmdet_keeps(both_outputs):
    _, theirs = both_outputs
    # Logits raised so that many (location, class) pairs pass the threshold and NMS has work.
    theirs = {**theirs, "class_logits": [x + 2.0 for x in theirs["class_logits"]]}
    found = jax.device_get(point_detections(theirs, STRIDES, 0.05, 1000, 0.5, 100, score="product"))
    boxes, scores, labels = mmdet_detections(theirs)
    count = int(found["valid"][0].sum())
    assert count == len(boxes) > 10
    np.testing.assert_allclose(found["scores"][0][:count], scores, rtol=1e-5)
    np.testing.assert_array_equal(found["classes"][0][:count], labels)
    np.testing.assert_allclose(found["boxes"][0][:count], boxes, rtol=1e-5, atol=1e-3)


def test_iou_loss_is_minus_log_iou():
    target = np.array([[4.0, 4.0, 4.0, 4.0]], np.float32)
    half = np.array([[4.0, 4.0, 0.0, 4.0]], np.float32)  # half the width: IoU 1/2
    np.testing.assert_allclose(fcos.iou_log_loss(target, target), [0.0], atol=1e-6)
    np.testing.assert_allclose(fcos.iou_log_loss(half, target), [np.log(2.0)], rtol=1e-6)


def test_model_pretrained_with_a_whole_mmdet_detector_loads_it_whole(mmdet_fcos, tmp_path):
    """`--set model.pretrained=FILE` with mmdet's released detector: the trainer's loader takes
    the whole model (head included, BGR turned to RGB), so `--mode=eval` scores mmdet's model."""
    from hrnet_jax.training import pretrained

    _, checkpoint = mmdet_fcos
    path = tmp_path / "fcos_hrnetv2p.pth"
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in checkpoint.items()},
                "meta": {}}, path)
    model = create_model("hrnet_w18_small", "detection", CLASSES,
                         detector=dict(style="mmdet", channels=CHANNELS))
    fresh = weights.abstract_variables(model)  # (a whole model replaces every variable)
    variables, account = pretrained.initialise_from(str(path), model, dict(fresh))
    assert "the whole model" in account
    expected = load(checkpoint)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


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
